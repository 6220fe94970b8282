"""Sweep CSVs -> validated run specs, filters, and the training command of a run. Pure.

CSV: header `run_id,config,seed,overrides,notes,gpus,nodes` (any order; config, overrides, notes, gpus and nodes
may be empty or absent (an empty config: no positional argument), and seed too when wfops does not inject it);
overrides follow THE one rule of wfops.sweeps.args; standard CSV quoting; `#` comment lines and blank
lines are ignored; a UTF-8 BOM and CRLF line ends are fine. Every bad row is reported with its line
number, and nothing is uploaded or started while any row is bad.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from wfops.agent import argv as pod_argv
from wfops.agent.states import ALL_GPUS
from wfops.errors import UsageError
from wfops.settings.load import Settings, is_gpus_request
from wfops.sweeps import args as overrides_rule
from wfops.sweeps.args import Override
from wfops.transport.shell import is_pod_name

if TYPE_CHECKING:  # the wire's TypedDicts exist for the type checker only (the pod agent never imports typing)
    from wfops.agent.wire import ExecBlock, LaunchScript, QueueEntry, RunRow

COLUMNS = ("run_id", "config", "seed", "overrides", "notes", "gpus", "nodes")
MAX_NODES = 64
NODE_SUFFIX = ".node"  # the entry of a multi-node run on the pod of node k >= 1: RUN_ID.nodeK
REQUIRED = ("run_id",)

TEMPLATE_CSV = """\
run_id,config,seed,overrides,notes
# one row per training run; lines starting with # are ignored; an empty config passes no positional argument
# overrides: key=value words (--flag, --key value: TRAIN_ARG_STYLE=argparse); {out_dir} {run_id} {seed} are the run's
# an optional gpus column says how many GPUs a run holds (1, 2, ... or all; default RUN_GPUS)
baseline-s1,config/train_tiny.py,1,,baseline
lr1e-3-s1,config/train_tiny.py,1,learning_rate=1e-3,lower learning rate
bigbatch-s2,config/train_tiny.py,2,"batch_size=8 learning_rate=2e-3","bigger batch, seed 2"
"""


@dataclass(frozen=True)
class RunSpec:
    line: int
    run_id: str
    config: str  # "": no positional argument
    seed: int | None  # None: no seed column (allowed when wfops does not inject seed)
    overrides: tuple[Override, ...]  # in order
    notes: str = ""
    gpus: str = ""  # "" (RUN_GPUS decides), "all", or a whole number as text
    nodes: int = 1  # pods one run spans (multi-node torchrun; a fleet only)

    def as_dict(self) -> RunRow:
        out: RunRow = {"line": self.line, "run_id": self.run_id, "config": self.config, "seed": self.seed,
                       "overrides": [o.text() for o in self.overrides], "notes": self.notes, "gpus": self.gpus}
        if self.nodes > 1:
            out["nodes"] = self.nodes
        return out


@dataclass
class Problems:
    items: list[tuple[int, str]] = field(default_factory=list)

    def add(self, line: int, message: str) -> None:
        self.items.append((line, message))

    def __bool__(self) -> bool:
        return bool(self.items)

    def lines(self) -> list[str]:
        return [f"line {line}: {msg}" for line, msg in sorted(self.items)]


def check_run_id(run_id: str) -> str | None:
    if not run_id:
        return "run_id is empty"
    if not is_pod_name(run_id):
        return (f"run_id {run_id!r} is not valid: use letters, digits, '.', '_' or '-', starting with a "
                "letter or digit, no '..' (it names a directory on the pod)")
    return None


def _check_config(path: str) -> str | None:
    if not path:
        return None  # no positional argument
    parts = path.split("/")
    if path.startswith("/") or ".." in parts or any(ch in path for ch in "\n\r\x00"):
        return f"config {path!r} must be a path inside the training workdir (relative, no '..')"
    return None


def parse_overrides(text: str, injected: Iterable[str] = (), style: str = "bare"
                    ) -> tuple[tuple[Override, ...], str | None]:
    """A cell's overrides by THE one rule (wfops.sweeps.args.parse)."""
    return overrides_rule.parse(text, style, injected)


def check_gpus(text: str) -> str | None:
    """A `gpus` value (CSV column or RUN_GPUS): empty, `all`, or a whole number >= 1."""
    if text == "" or is_gpus_request(text):
        return None
    return f"gpus {text!r} is not a whole number >= 1 or 'all'"


def check_nodes(text: str) -> str | None:
    if text == "" or (re.fullmatch(r"[1-9]\d{0,2}", text) and int(text) <= MAX_NODES):
        return None
    return f"nodes {text!r} is not a whole number from 1 to {MAX_NODES}"


def _check_seed(text: str, injected: tuple[str, ...]) -> str | None:
    if text == "" and "seed" not in injected:
        return None
    if not re.fullmatch(r"\d{1,18}", text):
        return f"seed {text!r} is not a whole number" + (" (wfops injects seed: TRAIN_INJECT)" if not text else "")
    return None


def _header_problem(header: list[str], injected: tuple[str, ...]) -> str:
    required = REQUIRED + (("seed",) if "seed" in injected else ())
    missing = [c for c in required if c not in header]
    unknown = [c for c in header if c not in COLUMNS]
    dupes = {c for c in header if header.count(c) > 1}
    return "; ".join(filter(None, [
        f"missing column(s) {', '.join(missing)}" if missing else "",
        f"unknown column(s) {', '.join(unknown)}" if unknown else "",
        f"repeated column(s) {', '.join(sorted(dupes))}" if dupes else "",
    ]))


def _row_problems(values: dict[str, str], line: int, seen: dict[str, int], injected: tuple[str, ...],
                  problems: Problems, style: str) -> tuple[int | None, tuple[Override, ...]] | None:
    """Check one row; returns its (seed, overrides) when it is good, None when a problem was added."""
    before = len(problems.items)
    run_id = values.get("run_id", "")
    bad = check_run_id(run_id)
    if bad:
        problems.add(line, bad)
    elif run_id in seen:
        problems.add(line, f"run_id {run_id} repeats line {seen[run_id]}")
    else:
        seen[run_id] = line
    seed_text = values.get("seed", "")
    overrides, bad_overrides = parse_overrides(values.get("overrides", ""), injected, style)
    if not bad_overrides and not seed_text and overrides_rule.needs_seed(overrides):
        bad_overrides = f"override {overrides_rule.needs_seed(overrides)} uses {{seed}}, and the row has no seed"
    for bad in (_check_config(values.get("config", "")), _check_seed(seed_text, injected), bad_overrides,
                check_gpus(values.get("gpus", "")), check_nodes(values.get("nodes", ""))):
        if bad:
            problems.add(line, bad)
    if len(problems.items) != before:
        return None
    return (int(seed_text) if seed_text else None), overrides


def parse_csv(text: str, injected: Iterable[str] = ("out_dir", "data_dir", "seed", "wandb"),
              consequence: str = "; nothing was uploaded or started", style: str = "bare") -> list[RunSpec]:
    """All runs of a sweep CSV, or UsageError listing every bad row with its line number (and `consequence`:
    what did not happen because of them; sweep.validate, which never uploads, says nothing of it). TRAIN_ARG_STYLE
    `style` says which override shapes are good."""
    if text.startswith("\ufeff"):
        text = text[1:]
    problems = Problems()
    runs: list[RunSpec] = []
    header: list[str] | None = None
    seen: dict[str, int] = {}
    reader = csv.reader(io.StringIO(text, newline=""))
    injected = tuple(injected)
    while True:
        line = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problems.add(line, f"not valid CSV: {exc}")
            break
        if not row or all(not c.strip() for c in row) or row[0].lstrip().startswith("#"):
            continue
        if header is None:
            header = [c.strip().lower() for c in row]
            what = _header_problem(header, injected)
            if what:
                problems.add(line, f"header must name the columns {','.join(COLUMNS)}: {what}")
                break
            continue
        if len(row) > len(header):
            problems.add(line, f"{len(row)} fields for {len(header)} columns; quote any field that holds a comma")
            continue
        values = dict(zip(header, [c.strip() for c in row], strict=False))
        good = _row_problems(values, line, seen, injected, problems, style)
        if good is not None:
            runs.append(RunSpec(line, values["run_id"], values.get("config", ""), good[0], good[1],
                                values.get("notes", ""), values.get("gpus", ""), int(values.get("nodes") or 1)))
    _node_ids_taken(runs, seen, problems)
    if header is None and not problems:
        problems.add(1, "the CSV is empty: it needs the header " + ",".join(COLUMNS))
    if problems:
        listing = problems.lines()
        raise UsageError(f"the sweep CSV has {len(listing)} problem(s){consequence}\n  "
                         + "\n  ".join(listing))
    if not runs:
        raise UsageError("the sweep CSV has a header but no runs")
    return runs


def _node_ids_taken(runs: list[RunSpec], seen: dict[str, int], problems: Problems) -> None:
    """A multi-node run's node k >= 1 is RUN_ID.nodeK on its pod: no other row may be called that."""
    for run in runs:
        for k in range(1, run.nodes):
            name = f"{run.run_id}{NODE_SUFFIX}{k}"
            if name in seen:
                problems.add(seen[name], f"run_id {name} is taken by node {k} of {run.run_id} (nodes {run.nodes})")


def select_runs(runs: list[RunSpec], match: str = "", start_at: str = "", limit: int | None = None) -> list[RunSpec]:
    """SWEEP_START_AT (first run_id to run), then SWEEP_MATCH (substring), then SWEEP_LIMIT (count)."""
    selected = runs
    if start_at:
        ids = [r.run_id for r in runs]
        if start_at not in ids:
            raise UsageError(f"--start-at / SWEEP_START_AT {start_at!r} is not a run_id of the CSV")
        selected = selected[ids.index(start_at):]
    if match:
        selected = [r for r in selected if match in r.run_id]
    if limit is not None:
        selected = selected[:limit]
    if not selected:
        raise UsageError("the filters (SWEEP_MATCH / SWEEP_START_AT / SWEEP_LIMIT) leave no run to start")
    return selected


def with_common(run: RunSpec, common: tuple[Override, ...]) -> tuple[Override, ...]:
    """SWEEP_COMMON_OVERRIDES then the row's own overrides; a key the row sets is the row's."""
    return overrides_rule.merged(common, run.overrides)


def train_args(settings: Settings, run: RunSpec, wandb_group: str,
               common: tuple[Override, ...] = ()) -> list[str]:
    """Arguments after `TRAIN_SCRIPT [CONFIG] out_dir=.. data_dir=..` (the pod adds those two, whose values are
    pod paths): seed, the W&B keys, then SWEEP_COMMON_OVERRIDES and the row's overrides, in TRAIN_ARG_STYLE.
    Every word is in the placeholder grammar (wfops.agent.argv): wfops' own values are escaped, the pod fills
    in the placeholders of the overrides."""
    inject = set(settings.train_inject)
    style = settings.train_arg_style
    args: list[tuple[str, str]] = []
    if "seed" in inject:
        args.append(("seed", str(run.seed)))
    if "wandb" in inject:
        args += [("wandb_log", "True" if settings.sweep_wandb else "False"), ("wandb_group", wandb_group),
                 ("wandb_run_name", run.run_id)]
        if settings.wandb_project:
            args.append(("wandb_project", settings.wandb_project))
    own = [pod_argv.escape(format_arg(style, k, v)) for k, v in args]
    return own + [w for o in with_common(run, common) for w in o.words(style)]


def run_gpus(run: RunSpec, default: str) -> str:
    """How many GPUs a run asks for: its `gpus` cell, else RUN_GPUS; `all` or a whole number as text."""
    return run.gpus or default or ALL_GPUS


def fingerprint(settings: Settings, run: RunSpec, common: tuple[Override, ...] = ()) -> str:
    """What makes two runs of one run_id the same training: config, seed, overrides (common ones included),
    the script, launcher, argument style, injected keys, data dir and GPU request. Not the output path, and
    not the W&B group or run name (bookkeeping that changes every sweep). A run whose ok summary carries
    the same fingerprint is skipped; any difference reruns it. Overrides count by `Override.identity()`: argv
    words that differ (`--sizes 1 2`, `--sizes="1 2"`) make different fingerprints."""
    s = settings  # nproc: the text as written, as fingerprints always had it ("" for one per GPU)
    what = {"config": run.config, "seed": run.seed, "overrides": [o.identity() for o in with_common(run, common)],
            "script": s.train_script, "workdir": s.train_workdir, "launcher": s.train_launcher,
            "arg_style": s.train_arg_style, "inject": sorted(s.train_inject),
            "data_dir": s.data_dir, "gpus": run_gpus(run, s.run_gpus), "nproc": s.raw("TRAIN_NPROC")}
    if run.nodes > 1:  # absent for one node: fingerprints of runs from before the column stay the same
        what["nodes"] = run.nodes
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


def format_arg(style: str, key: str, value: str) -> str:
    return overrides_rule.format_pair(style, key, value)


def common_overrides(settings: Settings) -> tuple[Override, ...]:
    """SWEEP_COMMON_OVERRIDES by the rule of the CSV's cells; UsageError (one line) when a word is bad."""
    pairs, bad = parse_overrides(settings.sweep_common_overrides, settings.train_inject, settings.train_arg_style)
    if bad:
        raise UsageError(f"SWEEP_COMMON_OVERRIDES: {bad}")
    return pairs


def checked_runs(settings: Settings, text: str, consequence: str = "; nothing was uploaded or started"
                 ) -> list[RunSpec]:
    """The runs of a CSV and SWEEP_COMMON_OVERRIDES, checked by the same rule (sweep.validate, start and add
    all come here): UsageError naming every bad line."""
    runs = parse_csv(text, settings.train_inject, consequence, settings.train_arg_style)
    common = common_overrides(settings)
    key = overrides_rule.needs_seed(common)
    unseeded = [f"line {r.line}: SWEEP_COMMON_OVERRIDES' {key} uses {{seed}}, and the row has no seed"
                for r in runs if key and r.seed is None and key not in {o.key for o in r.overrides}]
    if unseeded:
        raise UsageError(f"the sweep CSV has {len(unseeded)} problem(s){consequence}\n  "
                         + "\n  ".join(unseeded))
    return runs


def plan_runs(settings: Settings, runs: list[RunSpec], chosen: set[str]) -> list[RunRow]:
    """The manifest's `runs`: every CSV row, whether the filters chose it, its GPU request and fingerprint."""
    common = common_overrides(settings)
    default = settings.run_gpus
    out = []
    for r in runs:
        row = r.as_dict()
        row["selected"], row["gpus"] = r.run_id in chosen, run_gpus(r, default)
        row["fp"] = fingerprint(settings, r, common)
        out.append(row)
    return out


def queue_entries(settings: Settings, runs: list[RunSpec], group: str,
                  scripts: Mapping[str, LaunchScript]) -> list[QueueEntry]:
    """What the pod's scheduler runs, in order: one entry per selected run, with its launch script
    (`scripts`: wfops.sweeps.launch_script.scripts() of these runs)."""
    common = common_overrides(settings)
    default = settings.run_gpus
    out = []
    for r in runs:
        entry: QueueEntry = {"run_id": r.run_id, "config": r.config, "seed": r.seed, "notes": r.notes, "line": r.line,
                             "args": train_args(settings, r, group, common), "expand": True,
                             "gpus": run_gpus(r, default), "fp": fingerprint(settings, r, common),
                             "script": scripts[r.run_id]}
        if r.nodes > 1:
            entry["nodes"] = r.nodes
        out.append(entry)
    return out


def exec_block(settings: Settings) -> ExecBlock:
    """Everything the pod's scheduler needs besides the runs; the manifest is its only input."""
    v, inject = settings, set(settings.train_inject)
    return {
        "repo": v.ops_remote_repo, "workdir": f"{v.ops_remote_repo.rstrip('/')}/{v.train_workdir}",
        "train_script": v.train_script, "data_dir": v.data_dir, "local_root": v.run_out_local_root,
        "cpu_only": settings.cpu_only, "nproc": settings.train_nproc, "arg_style": v.train_arg_style,
        "mode": v.run_out_mode, "sync_secs": settings.sync_interval_secs,
        "timeout_secs": settings.run_timeout_secs, "grace_secs": settings.kill_grace_secs,
        "inject_out_dir": "out_dir" in inject, "inject_data_dir": "data_dir" in inject,
        "launcher": v.train_launcher, "fake_gpus": settings.wf_fake_gpus,
        "rdzv_base_port": settings.rdzv_base_port, "retries": settings.run_retries,
        "retry_on": list(settings.retry_on), "retry_backoff_secs": settings.retry_backoff_secs,
        "stall_secs": settings.run_stall_secs, "keep_previous": settings.keep_previous,
        "resume_args": resume_args(settings), "resume_when": settings.resume_when,
    }


def resume_args(settings: Settings) -> list[str]:
    """RESUME_ARGS as the words a resumed attempt adds to its command, checked as overrides are (the one rule of
    wfops.sweeps.args, placeholders too) and written in TRAIN_ARG_STYLE; UsageError naming the key when not."""
    pairs, bad = parse_overrides(settings.resume_args, settings.train_inject, settings.train_arg_style)
    if bad:
        raise UsageError(f"RESUME_ARGS: {bad}")
    return [w for o in pairs for w in o.words(settings.train_arg_style)]  # placeholders: filled in on the pod

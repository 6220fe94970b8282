"""One run of a sweep on the pod: its directories and attempts, its exact command (command.sh) and the spec
its supervisor follows. The scheduler (scheduler.py) decides when; this module decides what.

A run dir holds the current attempt at its top (status.json, summary.json, stdout.log, command.sh, ranks/);
before a retry the previous attempt's files move to attempts/<n>/ while the training output stays (a
retry may resume from its checkpoints). A run dir replaced by a new run of the same id (a changed row,
SWEEP_FORCE, sweep.retry of an ok run) moves whole to _previous/<run_id>.<UTC stamp>; only the newest
KEEP_PREVIOUS of those are kept per run id.
"""

from __future__ import annotations

import os
import re
import shutil
import time

from . import argv as argv_words
from . import resume, runscript, store
from .states import (
    ATTEMPTS_DIR,
    COMMAND_FILE,
    GENERATION_FILE,
    LOG_FILE,
    RANKS_DIR,
    SPEC_FILE,
    STATUS_FILE,
    SUMMARY_FILE,
    SYNC_LOG,
)
from .wire import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Optional, Tuple

    from .states import Layout
    from .wire import ExecBlock, Json, NodeInfo, QueueEntry

ATTEMPT_FILES = (STATUS_FILE, SUMMARY_FILE, LOG_FILE, SYNC_LOG, COMMAND_FILE, SPEC_FILE, RANKS_DIR)
RANK_PREFIX = "[rank${rank}]:"  # torchrun's TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE: global rank of each line


def _stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def prune_previous(previous: str, run_id: str, keep: int) -> List[str]:
    """Remove all but the newest `keep` kept copies of `run_id` in _previous/; returns the names removed."""
    pattern = re.compile(r"^%s\.(\d{8}T\d{6}Z)(?:\.(\d+))?$" % re.escape(run_id))
    try:
        found = [(m.group(1), int(m.group(2) or 0), n) for n in os.listdir(previous) for m in [pattern.match(n)] if m]
    except OSError:
        return []
    gone = [n for _, _, n in sorted(found)[:max(0, len(found) - keep)]]
    for name in gone:
        shutil.rmtree(os.path.join(previous, name), ignore_errors=True)
    return gone


def keep_previous(pod: Layout, run_id: str, keep: int, log: Callable[[str], None]) -> None:
    """Move the run dir of `run_id` (if any) to _previous/, then prune to `keep` copies."""
    d = pod.run_dir(run_id)
    if not os.path.lexists(d):
        return
    os.makedirs(pod.previous, exist_ok=True)
    name, n = "%s.%s" % (run_id, _stamp()), 1
    while os.path.lexists(os.path.join(pod.previous, name)):  # two replacements within one second
        name, n = "%s.%s.%d" % (run_id, _stamp(), n), n + 1
    os.rename(d, os.path.join(pod.previous, name))
    log("%s: the previous run dir is kept in _previous/%s" % (run_id, name))
    gone = prune_previous(pod.previous, run_id, keep)
    if gone:
        log("%s: removed %s from _previous/ (KEEP_PREVIOUS=%d)" % (run_id, ", ".join(gone), keep))


def archive_attempt(run_dir: str, attempt: Any) -> None:
    """Before attempt `attempt` + 1: move the files of attempt `attempt` to attempts/<attempt>/ (a start that
    failed for its port: attempts/<n>-port-<k>/, a name no count of attempts reads)."""
    dest = os.path.join(run_dir, ATTEMPTS_DIR, str(attempt))
    os.makedirs(dest, exist_ok=True)
    for name in ATTEMPT_FILES:
        src = os.path.join(run_dir, name)
        if os.path.lexists(src):
            os.rename(src, os.path.join(dest, name))


def output_dir(ex: ExecBlock, run_id: str, run_dir: str, first: bool) -> str:
    """Where the run trains into: its run dir, or (local_sync) a fresh dir on local disk for a first attempt
    (an older one is renamed aside) and the same dir again for a retry."""
    if ex.get("mode") != "local_sync":
        return run_dir
    out = os.path.join(ex["local_root"], run_id)
    if first and os.path.lexists(out):
        os.rename(out, "%s.previous.%s" % (out, _stamp()))
    os.makedirs(out, exist_ok=True)
    return out


def _number(x: Any) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def node_flags(node: NodeInfo, nproc: int) -> List[str]:
    """torchrun's flags for one node of a multi-node run (a queue entry's "node"): every node meets at the
    shared c10d endpoint, which node 0 hosts (is_host=1) and the others join (is_host=0) within join_timeout.
    c10d assigns the ranks at the rendezvous; --node-rank is passed all the same (logs, other backends)."""
    host = 1 if int(node["rank"]) == 0 else 0
    flags = ["--nnodes=%d" % int(node["nnodes"]), "--node-rank=%d" % int(node["rank"]), "--nproc-per-node=%d" % nproc,
             "--rdzv-backend=c10d", "--rdzv-endpoint=%s" % node["endpoint"], "--rdzv-id=%s" % node["rdzv_id"],
             "--rdzv-conf=is_host=%d,join_timeout=%s" % (host, _number(node.get("join_timeout") or 600))]
    if node.get("local_addr"):
        flags.append("--local-addr=%s" % node["local_addr"])
    return flags


def node_port(node: NodeInfo) -> int:
    """The rendezvous port of a multi-node run: its endpoint's (every node uses the same one)."""
    return int(str(node["endpoint"]).rsplit(":", 1)[1])


def node_note(run: QueueEntry) -> str:
    node = run["node"]
    return ("%s: node %d of %d of multi-node run %s (rendezvous %s); one attempt only: a retry on one node alone "
            "would wait for peers that are gone" % (run["run_id"], int(node["rank"]), int(node["nnodes"]),
                                                    node["rdzv_id"], node["endpoint"]))


def launcher_of(ex: ExecBlock, nproc: int, node: Any) -> str:
    """The launcher one attempt uses: TRAIN_LAUNCHER, where `auto` is plain python for one process on a CPU target
    (CPU_ONLY=1: torchrun would set RANK and the script would go distributed, e.g. with NCCL) and torchrun
    otherwise; a manifest without the key is torchrun (wfops' default before auto)."""
    kind = ex.get("launcher") or "torchrun"
    if kind == "auto":
        return "python" if ex.get("cpu_only") and nproc == 1 and not node else "torchrun"
    return kind


class Launch:
    """What one attempt runs: argv and the environment lines of command.sh (runscript.py writes it)."""

    def __init__(self, ex: ExecBlock, venv_python: str, run: QueueEntry, place: Json) -> None:
        self.ex, self.python, self.run, self.place = ex, venv_python, run, place
        self.kind = place.get("launcher") or launcher_of(ex, int(place["nproc"]), run.get("node"))

    def _arg(self, key: str, value: str) -> str:
        dashes = self.ex.get("arg_style") in ("dashdash", "argparse")
        return "--%s=%s" % (key, value) if dashes else "%s=%s" % (key, value)

    def tee(self) -> bool:
        """Several worker processes (on this node, or across nodes): each line carries its global rank."""
        return self.place["nproc"] > 1 or bool(self.run.get("node"))

    def script(self) -> List[str]:
        """TRAIN_SCRIPT's words, then the CSV's config when the row has one."""
        return argv_words.script_words(self.ex["train_script"]) + ([self.run["config"]] if self.run["config"] else [])

    def placeholders(self, out: str, run_dir: str) -> Dict[str, str]:
        """The values of the run's placeholders in its overrides (wfops.agent.argv.PLACEHOLDERS)."""
        values = {"run_dir": run_dir, "out_dir": out, "run_id": self.run["run_id"], "data_dir": self.ex["data_dir"],
                  "workdir": self.ex["workdir"]}
        if self.run.get("seed") is not None:
            values["seed"] = str(self.run["seed"])
        return values

    def argv(self, out: str, run_dir: str) -> List[str]:
        ex, run, p = self.ex, self.run, self.place
        if self.kind == "python":
            argv = [self.python]
        elif run.get("node"):
            argv = [self.python, "-m", "torch.distributed.run"] + node_flags(run["node"], p["nproc"])
        else:
            argv = [self.python, "-m", "torch.distributed.run", "--nnodes=1", "--nproc-per-node=%d" % p["nproc"],
                    "--rdzv-backend=c10d", "--rdzv-endpoint=localhost:%d" % p["port"],
                    "--rdzv-id=%s-%d" % (run["run_id"], p["attempt"]),
                    # host the store or fail: never join another job's rendezvous that took the port first
                    "--rdzv-conf=is_host=1"]
        if self.kind != "python" and self.tee():  # each worker line carries its rank; each rank's own
            argv += ["--tee=3", "--log-dir=" + os.path.join(run_dir, RANKS_DIR)]  # log is kept too
        argv += self.script()
        if ex.get("inject_out_dir"):
            argv.append(self._arg("out_dir", out))
        if ex.get("inject_data_dir"):
            argv.append(self._arg("data_dir", ex["data_dir"]))
        # RESUME_ARGS last: a resumed attempt's words win over the row's (resume.py decided at build())
        args = list(run.get("args") or []) + list((p.get("resume") or {}).get("args") or [])
        if run.get("expand"):  # placeholders of the overrides and RESUME_ARGS; no shell sees the words
            values = self.placeholders(out, run_dir)
            args = [argv_words.expand(w, values) for w in args]
        return argv + args

    def env(self) -> List[Tuple[str, str]]:
        out = [("PYTHONUNBUFFERED", "1")]  # lines reach stdout.log (and run.logs --follow) as they are printed
        if self.place.get("devices") is not None:
            out.append(("CUDA_VISIBLE_DEVICES", self.place["devices"]))
        if self.kind != "python" and self.tee():
            out.append(("TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE", RANK_PREFIX))
        found = (self.place.get("resume") or {}).get("file")
        if found:
            out.append((resume.ENV, found))
        return out


def spec(ex: ExecBlock, sid: str, run: QueueEntry, run_dir: str, out: str, place: Json,
         git_sha: Optional[str]) -> Json:
    """The supervisor's spec of one attempt."""
    s: Json = {"argv": ["bash", os.path.join(run_dir, COMMAND_FILE)], "status": os.path.join(run_dir, STATUS_FILE),
         "log": os.path.join(run_dir, LOG_FILE), "timeout": ex.get("timeout_secs") or 0,
         "grace": ex.get("grace_secs", 20), "summary": True, "stall": ex.get("stall_secs") or 0, "watch_dir": out,
         "extra": {"run_id": run["run_id"], "sweep_id": sid, "config": run["config"], "notes": run.get("notes", ""),
                   "out_dir": out, "mode": ex.get("mode"), "git_sha": git_sha, "seed": run.get("seed"),
                   "nproc": place["nproc"], "gpus": place.get("devices"), "port": place.get("port"),
                   "launcher": place.get("launcher") or launcher_of(ex, int(place["nproc"]), run.get("node")),
                   "cpu_target": bool(ex.get("cpu_only")), "attempt": place["attempt"],
                   "max_attempts": place["max_attempts"], "fingerprint": run.get("fp"),
                   "rerun_why": run.get("rerun_why") or ""}}
    if place.get("resume"):
        s["extra"]["resume"] = place["resume"]["note"]
    if place.get("slots_total"):  # what the attempt's cost is made of (cost.py): the pod, its price, its share
        s["extra"].update(pod=place.get("pod"), price_per_hour=place.get("price_per_hour"),
                          slots_held=len(place.get("ids") or ()), slots_total=place["slots_total"])
    if run.get("node"):
        s["extra"].update(nodes=run["node"].get("nodes") or [], node_rank=int(run["node"]["rank"]))
    # the run's writes into the shared checkout are named in its summary (runnotes.py); its own dirs are not
    s["checkout"] = {"root": ex["repo"], "skip": [os.path.dirname(run_dir), ex.get("local_root") or "", out]}
    if ex.get("mode") == "local_sync":
        s["sync"] = {"src": out + "/", "dst": run_dir + "/", "interval": ex.get("sync_secs", 60),
                     "log": os.path.join(run_dir, SYNC_LOG)}
    return s


def build(pod: Layout, ex: ExecBlock, sid: str, run: QueueEntry, place: Json, venv_python: str,
          git_sha: Optional[str], log: Callable[[str], None]) -> Tuple[str, Json]:
    """Make the attempt's files. A first attempt builds its run dir whole in a hidden temp dir and renames it
    into place (a run dir exists complete or not at all); a retry (or a start again: port_taken) archives the last
    attempt's files first.
    Returns (run dir, spec)."""
    rid, d = run["run_id"], pod.run_dir(run["run_id"])
    again = place.get("again")  # the same attempt again after its port was taken (port_taken)
    first = place["attempt"] == 1 and not again
    if first:
        keep_previous(pod, rid, int(ex.get("keep_previous", 3)), log)
    else:
        archive_attempt(d, again or place["attempt"] - 1)
    out = output_dir(ex, rid, d, first)
    if not first:  # on the pod, at the attempt's launch: the checkpoint the last attempt left, if any
        place["resume"] = resume.decide(ex, out)
        if place["resume"]:
            log("%s: attempt %d: %s" % (rid, place["attempt"], place["resume"]["note"]))
    how = Launch(ex, venv_python, run, place)
    text = runscript.command_text(how, pod, sid, how.argv(out, d), d, out).encode()
    s = spec(ex, sid, run, d, out, place, git_sha)
    if not first:
        store.write_bytes(os.path.join(d, COMMAND_FILE), text)
        store.write_json(os.path.join(d, SPEC_FILE), s)
        return d, s
    tmp = os.path.join(pod.out, ".new-%s-%d" % (rid, os.getpid()))
    try:
        os.makedirs(tmp)
        store.write_bytes(os.path.join(tmp, GENERATION_FILE), ("%s %d\n" % (sid, time.time_ns())).encode())
        store.write_bytes(os.path.join(tmp, COMMAND_FILE), text)
        store.write_json(os.path.join(tmp, SPEC_FILE), s)
        os.rename(tmp, d)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return d, s


PORT_TRIES = 5  # how often a queued run starts again (all its attempts together) because its port was taken
PORT_TAKEN_RE = re.compile(r"EADDRINUSE|[Aa]ddress already in use")


def port_taken(run: QueueEntry, run_dir: str, place: Json, log: Callable[[str], None]) -> bool:
    """Whether a failed run starts again, the same attempt on another port: torchrun could not listen on its
    rendezvous port (is_host=1) because another process took it between the queue's check (slots.pick_port) and
    torchrun's own listen, a torch import later (many seconds on a busy pod: parallel jobs, or other queues on
    one machine, pick from the same range). No worker had started (the rendezvous comes first). At most
    PORT_TRIES times; `run` is marked for the next build (place "again")."""
    port, tries = place.get("port"), int(run.get("_port_tries") or 0)
    if not port or run.get("node") or place.get("launcher") == "python" or tries >= PORT_TRIES:
        return False
    try:
        with open(os.path.join(run_dir, LOG_FILE), "rb") as fh:
            fh.seek(max(0, os.fstat(fh.fileno()).st_size - 65536))
            lines = fh.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return False
    if not any(PORT_TAKEN_RE.search(ln) and re.search(r"\b%d\b" % port, ln) for ln in lines):
        return False
    run["_port_tries"] = tries + 1
    run["_again"] = "%d-port-%d" % (run.get("attempt", 1), tries + 1)
    log("start %s again on another port: its rendezvous port %d was taken before torchrun listened on it (%d/%d)"
        % (run["run_id"], port, tries + 1, PORT_TRIES))
    return True

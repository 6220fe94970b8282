"""sweep.template and sweep.validate: the sweep CSV, here, without the pod; and how sweep.start / sweep.add read
theirs. `--csv -` is standard output for sweep.template and standard input for sweep.validate
(`wfops sweep.template --csv - | wfops sweep.validate --csv -`); a command that uploads the CSV wants a file."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wfops import hints
from wfops.errors import NotFoundError, UsageError
from wfops.output import table
from wfops.settings.load import Settings
from wfops.sweeps import launch_script, model
from wfops.sweeps.model import TEMPLATE_CSV, select_runs
from wfops.tasks._base import JSON_HELP, emit, settings_for, wftask, write_new_file

if TYPE_CHECKING:
    from wfops.sweeps.model import RunSpec

CSV_HELP = "sweep CSV on this machine (default: SWEEP_CSV)"
STDIO = "-"  # `--csv -`: sweep.template writes to stdout, sweep.validate reads stdin


def csv_path(settings: Settings, csv: str | None, task: str) -> Path:
    if csv == STDIO:
        raise UsageError(f"{task} reads its CSV from a file, not from standard input ('-'): save it to a file and "
                         "pass that; nothing was sent")
    path = Path(csv or settings.sweep_csv).expanduser()
    if not path.is_file():
        raise NotFoundError(f"sweep CSV not found: {path} (write a starter with sweep.template)")
    return path


def read_runs(settings: Settings, path: Path, consequence: str = "; nothing was uploaded or started",
              ) -> tuple[str, list[RunSpec]]:
    text = csv_text(path.read_bytes(), str(path))
    return text, model.checked_runs(settings, text, consequence)  # THE override rule, CSV and common alike


def csv_text(data: bytes, where: str) -> str:
    """A CSV's bytes (a file's, or stdin's: a locale's decoding would turn other bytes into characters the header
    check then words as a confusing column error) as text: UTF-8, newlines as text mode reads them; else one line
    saying `where` is not UTF-8."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{where} is not UTF-8 text") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


@wftask(help={"csv": CSV_HELP + "; - prints it to stdout"})
def template(c: Any, csv: str | None = None, config: str | None = None) -> None:
    """Write a starter sweep CSV (never overwrites).

    Write a starter sweep CSV at SWEEP_CSV or --csv FILE (never overwrites); --csv - prints it instead."""
    settings = settings_for(c, config, local=True)
    if csv == STDIO:
        sys.stdout.write(TEMPLATE_CSV)
        return
    path = Path(csv or settings.sweep_csv).expanduser()
    write_new_file(path, TEMPLATE_CSV, "remove it or pass --csv with another path")
    csv_args = ["--csv", str(path)] if csv else []
    print(f"wrote {path}: edit it, then check it: {hints.command('sweep.validate', *csv_args, settings=settings)}")


@wftask(help={"csv": CSV_HELP + "; - reads it from stdin",
              "workdir": "a local copy of the training workdir: also check that every config exists",
              "json": JSON_HELP})
def validate(c: Any, csv: str | None = None, workdir: str | None = None, json: bool = False,
             config: str | None = None) -> None:
    """Check a sweep CSV here, without the pod.

    Check a sweep CSV here, without the pod: every bad row is reported with its line number."""
    settings = settings_for(c, config, local=True)
    if csv == STDIO:
        path = Path(STDIO)
        runs = model.checked_runs(settings, csv_text(sys.stdin.buffer.read(), "the CSV on standard input"), "")
    else:
        path = csv_path(settings, csv, "sweep.validate")
        runs = read_runs(settings, path, consequence="")[1]
    launch_script.scripts(settings, runs)  # the run template renders for every row (one line if not)
    if workdir:
        missing = [f"line {r.line}: config {r.config} does not exist in {workdir}" for r in runs
                   if r.config and not (Path(workdir) / r.config).is_file()]
        if missing:
            raise UsageError(f"{len(missing)} missing config(s)\n  " + "\n  ".join(missing))
    selected = {r.run_id for r in select_runs(runs, settings.sweep_match, settings.sweep_start_at,
                                             settings.sweep_limit)}
    data = {"csv": str(path), "runs": [dict(r.as_dict(), selected=r.run_id in selected) for r in runs]}
    gpus = settings.run_gpus
    emit(data, json, lambda: table(
        ("line", "run_id", "config", "seed", "overrides", "gpus", "queued"),
        [(r.line, r.run_id, r.config, r.seed, " ".join(o.text() for o in r.overrides), r.gpus or gpus,
          "yes" if r.run_id in selected else "no (filters)") for r in runs],
    ) + f"\n{len(runs)} run(s) valid; {len(selected)} would be queued with the current filters")

"""A run's command.sh: the launch script the client rendered from its template (RUN_TEMPLATE, or the shipped
remote_templates/run_command.sh.j2), with the values that only the pod knows at launch filled in.

Jinja lives only on the client. What it cannot know (which GPUs, the free rendezvous port, the attempt, the
pod's paths, the torchrun flags of a multi-node rank) it writes as a marker, `@wfops-MARK:NAME@`, where MARK
is a 16-hex-digit token the client derived from the run's values (so no value of the CSV can spell it) and
NAME one of RUNTIME. Here each marker becomes its value, already shell-quoted: one shell word, or for
`exports` and `launcher` whole shell text built from quoted words. A queue entry's "script" is
{"text", "mark", "source"}; an entry without one (queued by an older wfops) runs DEFAULT, which is what
run_command.sh.j2 renders to (tests/unit/test_run_template.py holds the two equal).
"""

from __future__ import annotations

import re

from . import wire
from .launch import shell_words
from .wire import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any, Dict, List, Mapping, Match, Protocol, Tuple

    from .states import Layout
    from .wire import ExecBlock, Json, QueueEntry

    class Launch(Protocol):  # runs.Launch (runs imports this module: no import back)
        ex: ExecBlock
        python: str
        run: QueueEntry
        place: Json

        def env(self) -> List[Tuple[str, str]]: ...

# the values filled in at launch, and what each one is (the table of docs/sweeps.md, Launch script, says the same)
RUNTIME = {
    "name": "the run's id on this pod (RUN_ID.nodeK for node K >= 1 of a multi-node run)",
    "sweep_id": "the sweep's id (the pod may add -2 when two sweeps start in the same second)",
    "attempt": "this attempt's number, 1 for the first",
    "max_attempts": "how many attempts the run may have (1 + RUN_RETRIES; 1 for a multi-node run)",
    "env_file": "the pod env file (REMOTE_ENV_PATH) as wfops wrote it",
    "workdir": "the training workdir on the pod (OPS_REMOTE_REPO/TRAIN_WORKDIR)",
    "python": "the repo venv's python on the pod",
    "run_dir": "the run's directory on the pod (status.json, stdout.log, command.sh)",
    "out_dir": "where the run trains into (its run dir, or under RUN_OUT_LOCAL_ROOT with local_sync)",
    "devices": "the GPU indices the scheduler gave the run (CUDA_VISIBLE_DEVICES; empty on a CPU target)",
    "port": "the rendezvous port (free on this pod, or a multi-node run's endpoint port)",
    "nproc": "worker processes on this node",
    "node_rank": "this node's rank in a multi-node run (0 for a one-node run)",
    "nnodes": "how many nodes the run spans (1 for a one-node run)",
    "exports": "the export lines of every run: PYTHONUNBUFFERED, CUDA_VISIBLE_DEVICES, torchrun's line prefix, "
               "WFOPS_RESUME_FROM (a resumed attempt's checkpoint)",
    "launcher": "the launcher's whole command line: python or torchrun with its flags, the script, the config, "
                "the injected keys, the seed, the W&B keys, the overrides and (a resumed attempt) RESUME_ARGS, "
                "each word quoted",
}
MARK_RE = re.compile(r"^[0-9a-f]{16}$")
MARKER_RE = re.compile(r"@wfops-([0-9a-f]{16}):([a-z_]+)@")
DEFAULT_MARK = "0" * 16


def marker(mark: str, name: str) -> str:
    return "@wfops-%s:%s@" % (mark, name)


def _default() -> str:
    m = {name: marker(DEFAULT_MARK, name) for name in RUNTIME}
    return ("#!/usr/bin/env bash\n"
            "# wfops run %(name)s of %(sweep_id)s, attempt %(attempt)s of %(max_attempts)s: the exact command, as run\n"
            "set -a; . %(env_file)s; set +a\n"
            "cd %(workdir)s || exit 2\n"
            "%(exports)s\n"
            "exec %(launcher)s\n" % m)


DEFAULT = _default()


def problem(script: Any) -> str:
    """Why a queue entry's "script" cannot be run ("" when it can): checked before a sweep takes the entry."""
    if script is None:
        return ""
    if not (isinstance(script, dict) and isinstance(script.get("text"), str)
            and isinstance(script.get("mark"), str) and MARK_RE.match(script["mark"])):
        return "its launch script is not {text, mark} with a 16-hex-digit mark"
    unknown = sorted({n for m, n in MARKER_RE.findall(script["text"]) if m == script["mark"] and n not in RUNTIME})
    if unknown:
        return "its launch script names unknown run-time value(s): %s" % ", ".join(unknown)
    return ""


def manifest_problem(m: Any) -> str:
    """The first fault of a manifest on the pod (it may have been edited since sweep-start checked it): its wire
    shape, then each queue entry's launch script; "" when a queue can run it."""
    fault = wire.problem(m, wire.MANIFEST)
    if fault:
        return fault
    for key in ("queue", "start"):
        for i, entry in enumerate(m.get(key) or []):
            why = problem(entry.get("script"))
            if why:
                return "%s[%d]: %s" % (key, i, why)
    return ""


def fill(text: str, mark: str, values: Dict[str, str]) -> str:
    """`text` with each of its markers (those with this mark) replaced by its value."""
    def one(m: Match[str]) -> str:
        return values[m.group(2)] if m.group(1) == mark else m.group(0)

    return MARKER_RE.sub(one, text)


def values(how: Launch, pod: Layout, sid: str, argv: List[str], run_dir: str, out: str) -> Dict[str, str]:
    """Every RUNTIME value of one attempt, as shell text (`how` is runs.Launch)."""
    node: Mapping[str, Any] = how.run.get("node") or {}
    p = how.place
    devices = p.get("devices")
    return {
        "name": shell_words([how.run["run_id"]]), "sweep_id": shell_words([sid]),
        "attempt": str(int(p["attempt"])), "max_attempts": str(int(p["max_attempts"])),
        "env_file": shell_words([pod.env_path]), "workdir": shell_words([how.ex["workdir"]]),
        "python": shell_words([how.python]), "run_dir": shell_words([run_dir]), "out_dir": shell_words([out]),
        "devices": shell_words(["" if devices is None else devices]), "port": str(int(p["port"])),
        "nproc": str(int(p["nproc"])), "node_rank": str(int(node.get("rank") or 0)),
        "nnodes": str(int(node.get("nnodes") or 1)),
        "exports": "\n".join("export %s=%s" % (k, shell_words([v])) for k, v in how.env()),
        "launcher": shell_words(argv),
    }


def command_text(how: Launch, pod: Layout, sid: str, argv: List[str], run_dir: str, out: str) -> str:
    """command.sh of one attempt: the entry's rendered script (else DEFAULT) with its run-time values."""
    script: Mapping[str, Any] = how.run.get("script") or {"text": DEFAULT, "mark": DEFAULT_MARK}
    return fill(script["text"], script["mark"], values(how, pod, sid, argv, run_dir, out))

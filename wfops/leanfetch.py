"""The cached fast path of a repeated run.fetch (issue 24, part 4): the pod has nothing new to send.

wfops.lean fetches as the task does: one exec, the pod's plan (wfops/agent/fetching.py) and then its tar stream.
After such a fetch through a warm keeper it also keeps, under the command line's key (wfops.leancache), what asking
the pod for its plan alone takes: the agent script, the request without its data, and the read the pod's kept agent
may answer (wire.SERVED). A hit builds this machine's index afresh (the local copy may have changed too), asks for the
plan through the keeper, and when the pod's answer is "nothing to send, no run replaced" with exit 0, it says what
the lean path says for such a fetch (the summary line, the files kept here that are gone on the pod, the run
folders) and ends. Here it only makes LOCAL_ARTIFACTS_DIR if it is gone and removes abandoned staging folders, as a
fetch with nothing to copy does.

Anything else (files to send, a replaced run, an error line, another exit, no keeper): the lean path runs the
command from the start and prints its own lines; of this exchange's lines only a config the request's prelude
wrote is said first (the lean path finds it written). The plan request is the fetch's own first step (the same
gate and config sync), so asking again finds what it left. A connection's error is the command's, as on the lean
path (not asked twice).
"""

from __future__ import annotations

import sys
import time

from wfops.agent.wire import TYPE_CHECKING
from wfops.transport.leanwire import Before, Exchange

if TYPE_CHECKING:  # typing is not imported at run time: the cached fast path stays light
    from typing import Any, NoReturn


def entry(cmd: Any) -> dict[str, Any]:
    """What a hit needs to ask for the plan alone, from the lean path's PodCommand (its session open): the agent
    script, the request of FETCH_PLAN without data, and the read the kept agent may answer."""
    from wfops.agent import wire

    script, request, serve = cmd.call_parts(wire.FETCH_PLAN, {})
    return {"script": script, "request": request, "serve": serve}


class _Plan(Exchange):
    """The plan's exchange: its stdout (the files to send), its meta lines kept, its other lines held back (shown
    only when this path ends the command; the lean path prints its own otherwise)."""

    def __init__(self, kept: dict[str, Any], redact: Any) -> None:
        super().__init__(kept, redact)
        self.meta: dict[str, str] = {}
        self.held: list[str] = []

    def ask(self) -> bytes:
        out, code = self._exec()
        if self.buffer:
            self._line(self.buffer.decode("utf-8", "replace"))
        if code != 0 or self.error is not None:
            raise Before()  # the lean path asks again and says it in its words
        return out

    def _line(self, line: str, sock: Any = None) -> None:
        from wfops.output import META_LINE, visible

        m = META_LINE.match(line)  # (an ERROR_LINE is one too: `@wfops-error CODE ...`)
        if m is None:
            self.held.append(visible(self.redact(line)))
        elif m.group(1) in ("error", "need"):
            super()._line(line, sock)  # the command's error, or the agent it lacks
        else:
            self.meta[m.group(1)] = m.group(2)

    def fall_back(self) -> NoReturn:
        """Before: the lean path runs the command from the start and prints its own lines. What it will not print
        again is said here first: the pod's config written by this request's prelude (the lean path finds it
        written); the rest (warnings of the gate, say) it says itself."""
        from wfops.agent.workflow import CONFIG_WRITTEN

        for line in self.held:
            if line.startswith(CONFIG_WRITTEN):
                sys.stderr.write(line + "\n")
        sys.stderr.flush()
        raise Before()


def run(kept: dict[str, Any]) -> int:
    """The repeated fetch of this kept entry; Before: the lean path runs the command."""
    import json
    from pathlib import Path

    from wfops.artifacts.index import plan_request
    from wfops.output import Redactor
    from wfops.transport.requestline import request_line

    t0 = time.time()
    v = kept["values"]
    dest = Path(kept["artifacts_dir"]).expanduser()
    try:
        data = plan_request(dest, v["run_id"] or "", bool(v["all"]), v["sweep"] or "", bool(v["hash"]),
                            bool(v["merge_replaced"]))
    except Exception:  # LOCAL_ARTIFACTS_DIR not a folder, unreadable...: the lean path says it in its words
        raise Before() from None
    fetch = kept["fetch"]
    script = fetch["script"] + request_line(dict(fetch["request"], data=data))
    plan_exchange = _Plan(dict(kept, script=script, serve=fetch["serve"]), Redactor(kept["secrets"]))
    try:
        out = plan_exchange.ask()  # Failed: the connection's error, as the lean path would say it (not asked twice)
        plan = json.loads(plan_exchange.meta["plan"])
    except (Before, KeyError, ValueError):  # the pod's error, no plan, or not one this path can say: the lean path
        plan_exchange.fall_back()
    if out or any(plan.get(k) for k in ("files", "replaced", "unreadable")) or plan_exchange.meta.get("size") != "0":
        plan_exchange.fall_back()  # something to copy (or to say: unreadable files): the lean path fetches it
    return _say(plan_exchange.held, dest, plan, t0)


def _say(held: list[str], dest: Any, plan: dict[str, Any], t0: float) -> int:
    """What the lean path says of a fetch that copied nothing (wfops.lean._Work.fetch, .show)."""
    from wfops.artifacts.staging import remove_abandoned_staging
    from wfops.artifacts.summary import Fetched, report, shown_folders
    from wfops.output import emit

    dest.mkdir(parents=True, exist_ok=True)
    remove_abandoned_staging(dest)
    for line in held:
        sys.stderr.write(line + "\n")
    shown = shown_folders(dest, [str(run) for run in plan.get("runs") or []])
    sys.stderr.write(report(Fetched(shown, 0, 0, time.time() - t0, plan, [])) + "\n")
    sys.stderr.flush()
    emit({"runs": shown}, False, lambda: "\n".join(shown))
    return 0


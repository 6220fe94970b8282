"""The lium provider: a Lium pod by name (resolve: wfops.targets.lium_pods), and renting and removing pods
through the lium CLI (wfops.targets.lium_cli) for pod.up and pod.down.

Renting is careful about money: a pod that `lium up` rented and that wfops then cannot use (lium failed after
the rent, Ctrl-C, SIGTERM) is removed, and a pod that cannot be removed is named with its exact `lium rm` line.
An interrupted `pod.up --count N` removes every pod it rented, not only the one in progress (`Stopped`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from wfops.errors import ConflictError, LiumError, NotFoundError, WfopsError
from wfops.interrupt import EXIT_INTERRUPTED
from wfops.settings.load import KEYS_BY_NAME, Settings
from wfops.targets import lium_pods, replaced
from wfops.targets.lium_cli import (
    INSTALL_HINT,
    LiumCLI,
    LiumFailure,
    LiumMissing,
    UpInterrupted,
    interrupts_ignored,
    lium_environ,
)
from wfops.targets.lium_rows import UP_KEYS, is_terminal, pod_words, up_argv
from wfops.targets.providers.base import Resolved
from wfops.targets.target import Member, Target


class LiumProvider:
    def resolve(self, settings: Settings, member: Member, *, use_cache: bool = True,
                require_ready: bool = True) -> Resolved:
        value = replaced.current(settings, member.name)  # a pod a managed sweep rented in its place, if any
        res = lium_pods.resolve(settings, value, use_cache=use_cache, require_ready=require_ready,
                                fallback=member.fallback)
        return Resolved(res.target, res.row, res.problem)

    def describe(self, member: Member) -> str:
        return f"Lium pod {member.name}"

    def again(self, settings: Settings, failed: Target, fallback: str | None) -> Target | None:
        return lium_pods.resolve_again(settings, failed, fallback=fallback)


PROVIDER = LiumProvider()


def cli(command: str, settings: Settings) -> LiumCLI:
    """The lium CLI, run with the config's LIUM_API_KEY (when it sets one) in its environment."""
    try:
        return LiumCLI.find(lium_environ(settings.lium_api_key))
    except LiumMissing:
        raise LiumMissing(f"{command} works through the lium CLI, which is not on PATH: {INSTALL_HINT} "
                          "(or put the environment it is installed in on PATH)") from None


def remove(lium: LiumCLI, settings: Settings, pod_id: str) -> str | None:
    """Remove a pod pod.up rented; None when it is gone, else why removing it failed."""
    try:
        lium.rm(pod_id)
    except LiumError as exc:
        return exc.message
    lium_pods.forget(pod_id=pod_id, environ=lium_environ(settings.lium_api_key))
    return None


def remove_pod(lium: LiumCLI, settings: Settings, row: Mapping[str, Any], name: str) -> dict[str, Any]:
    """pod.down's `lium rm` of the pod `name` resolved to: what lium says it removed (uptime, spent)."""
    try:
        removed = lium.rm(str(row["id"]))
    except LiumFailure as exc:
        if exc.lium_exit == 5:
            raise NotFoundError(f"pod {pod_words(row)} is already gone ({exc.message})") from None
        raise
    lium_pods.forget(name, pod_id=str(row["id"]), environ=lium_environ(settings.lium_api_key))
    if removed.get("failed"):
        raise LiumFailure(f"lium rm could not remove pod {pod_words(row)}; check `lium ps`")
    gone = (removed.get("removed") or [{}])[0]
    return dict(gone) if isinstance(gone, dict) else {}


def up_values(settings: Settings) -> dict[str, str]:
    """The LIUM_* keys of `lium up` as the file wrote them (up_argv checks and passes them as text)."""
    return {name: settings.raw(name) for name in UP_KEYS}


def rental_words(values: Mapping[str, str], ttl: str) -> str:
    parts = [f"node {values.get('LIUM_EXECUTOR_ID') or 'picked by lium (cheapest match)'}"]
    for key, label in (("LIUM_GPU", "gpu"), ("LIUM_COUNT", "gpus"), ("LIUM_COUNTRY", "country"),
                       ("LIUM_POD_NAME", "name"), ("LIUM_VOLUME", "volume")):
        if values.get(key):
            parts.append(f"{label} {values[key]}")
    return ", ".join(parts) + f", auto-removed after {ttl}"


# ------------------------------------------------------------------ interrupted: remove what was rented

@dataclass(frozen=True)
class Rented:
    name: str
    id: str

    def words(self) -> str:
        return f"{self.name} (id {self.id})"


Removal = tuple[Rented, "str | None"]  # a rented pod, and why removing it failed (None: removed)


class Stopped(WfopsError):
    """pod.up stopped by Ctrl-C or SIGTERM (`cause`): which pods it rented and removed or could not remove, and
    what it could not check (`unsure`). `message` is the last line; `before` the lines that go above it."""

    def __init__(self, cause: BaseException | None, removals: Sequence[Removal] = (), unsure: str | None = None):
        self.cause, self.removals, self.unsure = cause, list(removals), unsure
        self.before, last = stopped_lines(self.removals, unsure)
        super().__init__(last, EXIT_INTERRUPTED)

    def after(self, earlier: Sequence[Removal]) -> Stopped:
        """The same stop, with the removals of pods rented before it (pod.up --count)."""
        return Stopped(self.cause, [*earlier, *self.removals], self.unsure)


def stopped_lines(removals: Sequence[Removal], unsure: str | None) -> tuple[list[str], str]:
    """The lines of an interrupted pod.up: one `lium rm` line per pod it could not remove (when there are several),
    then the last line, which says nothing bills only when no pod it rented does."""
    gone = [p for p, why in removals if why is None]
    failed = [(p, why) for p, why in removals if why is not None]
    parts = []
    if gone:
        pods = "pod" if len(gone) == 1 else "pods"
        parts.append(f"removed {pods} {', '.join(p.words() for p in gone)} that it had rented")
    before: list[str] = []
    if len(failed) == 1:
        p, why = failed[0]
        parts.append(f"pod {p.words()} is rented and billing, and removing it failed ({why}); remove it now with "
                     f"`lium rm {p.id} -y`")
    elif failed:
        before = [f"wfops: pod {p.words()} is rented and billing, and removing it failed ({why}): remove it with "
                  f"`lium rm {p.id} -y`" for p, why in failed]
        parts.insert(0, f"{len(failed)} pod(s) it rented are billing: remove them with the `lium rm` lines above")
    if unsure:
        parts.append(unsure)
    elif not failed:
        parts.append("nothing bills" if gone else "no pod was rented; nothing bills")
    return before, "; ".join(parts)


def remove_rented(lium: LiumCLI, settings: Settings, pods: Sequence[Rented]) -> list[Removal]:
    """Remove the pods this pod.up rented (another Ctrl-C cannot stop that)."""
    out: list[Removal] = []
    for p in pods:
        print(f"wfops: pod.up interrupted; removing pod {p.words()} that it rented "
              "(Ctrl-C is ignored until that is done)", file=sys.stderr, flush=True)
        with interrupts_ignored():
            out.append((p, remove(lium, settings, p.id)))
    return out


def _rented_before_interrupt(lium: LiumCLI, stop: UpInterrupted, before: list[dict[str, Any]],
                             name: str) -> list[dict[str, Any]]:
    """The pods an interrupted `lium up` left: the one lium said it created, else any new pod of the name it
    rents under (LIUM_POD_NAME, else lium's default, the node's huid) that `lium ps` did not list before."""
    if stop.pod_id:
        return [{"id": stop.pod_id, "name": stop.pod_name or stop.pod_id}]
    if not stop.renting:
        return []  # lium had not sent the rent yet
    wanted = name or stop.renting
    known = {r.get("id") for r in before}
    with interrupts_ignored():
        rows = lium.ps()
    return [r for r in rows if r.get("id") not in known and wanted in (r.get("name"), r.get("huid"))]


def after_interrupted_up(lium: LiumCLI, settings: Settings, stop: UpInterrupted, before: list[dict[str, Any]],
                         name: str) -> Stopped:
    try:
        left = _rented_before_interrupt(lium, stop, before, name)
    except LiumError as exc:
        return Stopped(stop.cause, unsure=f"lium was renting node {stop.renting} and wfops could not check whether "
                                          f"a pod was created ({exc.message}); run `lium ps` and remove a new pod "
                                          f"{name or stop.renting} with `lium rm <its id> -y`")
    if len(left) <= 1:
        rented = [Rented(str(r.get("name") or r["id"]), str(r["id"])) for r in left]
        return Stopped(stop.cause, remove_rented(lium, settings, rented))
    commands = "; ".join(f"`lium rm {r['id']} -y`" for r in left)
    return Stopped(stop.cause, unsure=f"{len(left)} new pods named {name or stop.renting} appeared while lium was "
                                      f"renting and wfops cannot tell which is its own; they bill: remove yours "
                                      f"with one of {commands}")


# ------------------------------------------------------------------ renting

def pod_to_reuse(rows: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    """The running pod that already has LIUM_POD_NAME (reused, like `sky launch -c NAME`), None when no pod has
    it; refused (exit 10) when it is not running or several pods share it: LIUM_TARGET=NAME must stay one pod."""
    same = [r for r in rows if name and name in (r.get("name"), r.get("huid"))]
    if not same:
        return None
    if len(same) > 1:
        listed = "; ".join(f"{pod_words(r)} {r.get('status')}" for r in same)
        raise ConflictError(f"pod.up: {len(same)} pods already have the name {name} ({listed}), so wfops rents "
                            "none: remove the extra ones with pod.down (LIUM_TARGET=<uuid>) or set another "
                            "LIUM_POD_NAME")
    row = same[0]
    status = str(row.get("status") or "UNKNOWN").upper()
    if status == "RUNNING":
        return row
    todo = "remove it with pod.down" if is_terminal(row) else "wait for it with pod.wait or remove it with pod.down"
    raise ConflictError(f"pod.up: pod {pod_words(row)} already has the name {name} and is {status}, so wfops "
                        f"rents none: {todo} (LIUM_TARGET={row.get('id')}), or set another LIUM_POD_NAME")


def _remove_after_failed_up(lium: LiumCLI, settings: Settings, exc: LiumFailure) -> None:
    """`lium up` failed after renting: the pod bills, so remove it, and say so either way."""
    pod_id = str(exc.data["pod_id"])
    name = exc.data.get("pod_name") or pod_id
    cause = exc.message.split(". ")[0]
    failed = remove(lium, settings, pod_id)
    if failed:
        raise LiumFailure(f"pod.up rented pod {name} (id {pod_id}) but it failed ({cause}); removing it failed "
                          f"too ({failed}): it is billing, remove it now with `lium rm {pod_id} -y`") from None
    raise LiumFailure(f"pod.up rented pod {name} (id {pod_id}) but it failed ({cause}); wfops removed that pod, "
                      "so it no longer bills") from None


def rent(lium: LiumCLI, settings: Settings, argv: list[str], timeout: int,
         before: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """`lium up`: the pod row and lium's answer. A failure after the rent removes the pod; Ctrl-C too (Stopped)."""
    try:
        out = lium.up([*argv, "--timeout", str(timeout)], timeout=timeout + 60)
    except UpInterrupted as stop:
        raise after_interrupted_up(lium, settings, stop, before, settings.lium_pod_name.strip()) from None
    except LiumFailure as exc:
        if exc.data.get("pod_id"):
            _remove_after_failed_up(lium, settings, exc)
        raise
    row = out.get("pod")
    if not isinstance(row, dict) or not row.get("id"):
        raise LiumFailure(f"lium up answered without a pod: {str(out)[:200]}; check `lium ps`")
    return row, out


# ------------------------------------------------------------------ a managed sweep's replacement pod

RENT_TRIES = 4  # a refused rent (5xx, no capacity) is tried this often, the wait doubling each time
FOR_GOOD = (2, 6)  # lium's exits for a bad argument or config and for permission / balance / budget: never retried
REPLACE_UP_SECS = 900


def rent_replacement(lium: LiumCLI, settings: Settings, first_wait: float,
                     log: Callable[[str], None]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A pod like the lost one: `lium up` with the config's LIUM_* spec (LIUM_VOLUME too: /mnt comes back). Lium
    refusing (an API failure, no capacity) is tried RENT_TRIES times with a doubling wait, then a LiumFailure says
    so; a pod that was rented and then failed is removed by `rent` (it says so)."""
    argv, _ = up_argv(up_values(settings), KEYS_BY_NAME["LIUM_TTL"].default)
    wait = max(1.0, first_wait)
    for attempt in range(1, RENT_TRIES + 1):
        try:
            return rent(lium, settings, argv, REPLACE_UP_SECS, lium.ps())
        except LiumError as exc:
            if isinstance(exc, LiumFailure) and exc.data.get("pod_id"):
                raise  # rented, then failed: removed already (or named with its `lium rm` line)
            if isinstance(exc, LiumFailure) and exc.lium_exit in FOR_GOOD:  # e.g. over budget: waiting won't help
                raise LiumFailure(f"Lium refused to rent a replacement ({exc.message}); waiting would not change that",
                                  lium_code=exc.lium_code, lium_exit=exc.lium_exit) from None
            if attempt == RENT_TRIES:
                raise LiumFailure(f"Lium refused to rent a replacement {RENT_TRIES} times (last: {exc.message})",
                                  ) from None
            log(f"wfops: Lium refused to rent a replacement ({exc.message}); trying again in {wait:.0f}s "
                f"({attempt}/{RENT_TRIES})")
            time.sleep(wait)
            wait *= 2
    raise AssertionError("unreachable")


def replacement_spec(settings: Settings, member: Member) -> Settings:
    """The settings a lost pod's replacement is rented with: the config's LIUM_* spec; on a fleet, the pod's own
    volume (LIUM_VOLUMES, in LIUM_TARGETS' order; none without an entry) instead of LIUM_VOLUME, which is one volume
    and attaches to one pod."""
    if not settings.lium_targets and not settings.ops_hosts:
        return settings
    names = list(settings.lium_targets)
    i = names.index(member.name) if member.name in names else -1
    own = settings.lium_volumes[i] if 0 <= i < len(settings.lium_volumes) else ""
    return settings.override({"LIUM_VOLUME": own})


def listed(lium: LiumCLI, pod_id: str) -> dict[str, Any] | None:
    """The `lium ps` row of pod `pod_id`, None when Lium no longer lists it."""
    return next((r for r in lium.ps() if str(r.get("id")) == pod_id), None)

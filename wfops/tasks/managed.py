"""A managed sweep: `sweep.wait --recover` keeps a sweep going until every run has an end, without a person, and
`--down-when-done` fetches every run and removes the pods it rented once it has ended (docs/recovery.md).

A pod is lost when it has not answered for RECOVER_AFTER_SECS, or at once when Lium reports it FAILED / STOPPED
or no longer lists it; a pod whose sweep queue died (it rebooted, its processes were killed) while it answers
again is recovered at once. Recovering, at most RECOVER_MAX times per sweep (wfops.sweeps.recover.Book):
  - a Lium pod: the lost pod is removed if this sweep rented it and Lium still lists it; a pod with the same
    LIUM_* spec and LIUM_VOLUME is rented (Lium refusing is retried with back-off), the config's name is pointed
    at it (wfops.targets.replaced), then SSH, bootstrap, checkout;
  - an SSH host (not rentable): never while it is silent (it may only be cut off, its queue going on: one line
    says it is waited for); once it answers and its queue died;
then `sweep-recover` on the pod (wfops/agent/recover.py) starts its share again: runs that were running as their
next attempt with reason `lost` in the same run dir, runs that had not started as queued; ended runs never again.
Every step prints one line. Ctrl-C leaves every pod as it is and says what to run to go on.
"""

from __future__ import annotations

import time
from typing import Any

from wfops.agent import wire
from wfops.agent.states import EXIT_CONNECT, EXIT_LOST, EXIT_NOT_FOUND, LOST, PENDING, QUEUE_STOPPED, RUNNING, UNKNOWN
from wfops.errors import ConnectError, LiumError, NotFoundError, WfopsError
from wfops.fanout import Log, to_stderr
from wfops.interrupt import EXIT_INTERRUPTED
from wfops.settings.load import Settings
from wfops.sweeps import fleet_status
from wfops.sweeps.billing import usd
from wfops.sweeps.fleet_pods import Pods
from wfops.sweeps.ledger import ledger_lock, load_ledger, restarted, save_ledger
from wfops.sweeps.recover import Book, Silence, managing
from wfops.targets import replaced, resolve
from wfops.targets.lium_cli import LiumCLI
from wfops.targets.lium_rows import is_terminal, pod_words
from wfops.targets.providers import lium
from wfops.targets.target import LIUM, Member
from wfops.tasks.pod import wait_for_pod
from wfops.tasks.prep import bootstrap_pod, checkout_pod
from wfops.transport.command import PodCommand, call_once

ROUND_SECS = 3  # each sweep-wait answers when the queue ends or after this long
READY_SECS = 900  # a replacement pod must answer over SSH within this long
DOWN = (ConnectError, NotFoundError, LiumError)  # how a pod that does not answer shows (NotFound: Lium lost it)


class _Session:
    """The one open session to the pod while it answers (a new one after it stopped answering)."""

    def __init__(self, settings: Settings, member: Member) -> None:
        self.settings, self.member = settings, member
        self.cmd: PodCommand | None = None

    def ask(self, patterns: list[Any]) -> tuple[dict[str, Any] | None, str]:
        try:
            if self.cmd is None:
                self.cmd = PodCommand("sweep.wait", self.settings, member=self.member).__enter__()
            return self.cmd.call(wire.SWEEP_WAIT, timeout=ROUND_SECS, patterns=patterns), ""
        except WfopsError as exc:
            if not isinstance(exc, DOWN) and exc.code != EXIT_CONNECT:  # a warm connection's: code 4
                raise
            self.close()
            return None, exc.message

    def close(self) -> None:
        if self.cmd is not None:
            cmd, self.cmd = self.cmd, None
            cmd.__exit__(None, None, None)


def gone(settings: Settings, member: Member) -> str | None:
    """What the provider says of a pod that does not answer: why it is gone for good, None when it cannot tell."""
    if member.provider != LIUM:
        return None
    try:
        res = resolve.resolve(settings, member, use_cache=False, require_ready=False)
    except NotFoundError:
        return "Lium no longer lists it"
    except WfopsError:
        return None  # the Lium API is down too: silence decides
    if res.row is not None and is_terminal(res.row):
        return f"Lium reports it {str(res.row.get('status')).upper()}"
    return None


def _pod_words(settings: Settings, member: Member) -> str:
    """`train (id 4c1e…)` for a Lium pod (the pod behind the name now), the host for an SSH host."""
    if member.provider != LIUM:
        return member.name
    pod_id = replaced.current(settings, member.name)
    return member.name if pod_id == member.name else f"{member.name} (id {pod_id})"


def managed(settings: Settings, timeout: int | None, patterns: list[Any],
            log: Log = to_stderr) -> tuple[Book, dict[str, Any]]:
    """sweep.wait --recover: (the sweep's record, its last status once it has ended)."""
    book = Book(settings) if resolve.is_fleet(settings) else Book.for_pod(settings, resolve.one(settings).name)
    with managing(settings, [m.name for m in resolve.pods(settings)]):  # one managed command per pod
        if resolve.is_fleet(settings):
            fleet = FleetRecovery(settings, book, log)
            try:
                data = fleet_status.wait(settings, timeout, patterns, on_round=fleet.round)
            except KeyboardInterrupt:
                raise interrupted(", ".join(_pod_words(settings, m) for m in fleet.members.values())) from None
        else:
            data = managed_wait(settings, book, timeout, patterns, log)
    sweep = data.get("sweep") or {}
    if sweep.get("state") == QUEUE_STOPPED and sweep.get("reason"):  # the budget, a sweep.stop: why nothing more ran
        log(f"wfops: {sweep.get('sweep_id')} stopped: {sweep['reason']}")
    return book, data


def interrupted(pods: str) -> WfopsError:
    """The last line of a managed command stopped by Ctrl-C (`pods`: the pods it managed, in words)."""
    return WfopsError(f"sweep.wait --recover interrupted: every pod stays as it is ({pods}); go on with "
                      "`inv sweep.wait --recover`", EXIT_INTERRUPTED)


class FleetRecovery:
    """sweep.wait --recover on a fleet: each round of fleet_status.wait, a lost Lium pod is replaced and a pod
    whose queue died is restarted, each with the runs the ledger has on it (the fleet's own rebalance moves the
    runs of a silent pod that had not started to the other pods, as without --recover). An SSH host that is
    silent is tried again each round, never waited for: the other pods go on."""

    def __init__(self, settings: Settings, book: Book, log: Log) -> None:
        self.settings, self.book, self.log = settings, book, log
        self.members = {m.name: m for m in resolve.members(settings)}
        self.silence: dict[str, Silence] = {}

    def round(self, data: dict[str, Any], pods: Pods) -> bool:
        if not self.book.sweep_id:
            self.book.bind(str(data["sweep"]["sweep_id"]))
            self.log(f"wfops: managing {self.book.sweep_id} on {len(data['pods'])} pods: a pod lost for "
                     f"{self.settings.recover_after_secs}s is recovered (at most {self.settings.recover_max} times)")
        now, changed = time.monotonic(), False
        for name, info in data["pods"].items():
            member = self.members[name]
            silence = self.silence.setdefault(name, Silence(float(self.settings.recover_after_secs)))
            if not info["reachable"] and member.provider != LIUM:
                info["reachable"] = pods.reconnect(name)  # an SSH host: back yet? (its queue is looked at next round)
                continue
            if info["reachable"]:
                silence.heard()
                if info.get("queue") == LOST and self._share(data, name):
                    self._recover(member, "its queue was lost", False, data, pods)
                    changed = True
                continue
            lost = silence.lost(now, str(info.get("error")), gone(self.settings, member))
            if lost:
                try:
                    self._recover(member, lost, True, data, pods)
                except LostAgain as exc:  # the next round finds it lost again
                    self.log(exc.message)
                silence.heard()
                changed = True
        away = [n for n, info in data["pods"].items() if not info["reachable"] and self._share(data, n)]
        if not changed and away and data["sweep"]["state"] != RUNNING:  # the rest ended: wait for those hosts
            time.sleep(1)
            return True
        return changed

    def _share(self, data: dict[str, Any], name: str) -> list[str]:
        """The runs of pod `name` (one-node) that have no end: lost, pending, or not seen (its pod is silent)."""
        return [r["run_id"] for r in data["runs"] if r.get("pod") == name and r["state"] in (LOST, PENDING, UNKNOWN)]

    def _recover(self, member: Member, why: str, replace: bool, data: dict[str, Any], pods: Pods) -> None:
        runs = self._share(data, member.name)
        ledger = load_ledger(self.settings, self.book.sweep_id)
        pod_sweep = ledger["pods"][member.name]["sweep_id"]
        recover(self.settings, member, self.book, why, replace, self.log, run_ids=runs, sweep_id=pod_sweep)
        with ledger_lock(self.settings):
            fresh = load_ledger(self.settings, self.book.sweep_id)
            for rid in runs:
                if rid in fresh["runs"]:
                    restarted(fresh["runs"][rid])
            save_ledger(self.settings, fresh)
        pods.reconnect(member.name)


def managed_wait(settings: Settings, book: Book, timeout: int | None, patterns: list[Any],
                 log: Log = to_stderr) -> dict[str, Any]:
    """sweep.wait --recover on the config's one pod: the sweep's last status once it has ended."""
    member = resolve.one(settings)
    silence = Silence(float(settings.recover_after_secs))
    deadline = time.monotonic() + timeout if timeout else None
    conn = _Session(settings, member)
    last: dict[str, Any] = {}
    waiting = False  # an SSH host silent past RECOVER_AFTER_SECS: said once, waited for
    try:
        while True:
            data, why = conn.ask(patterns)
            now = time.monotonic()
            if data is not None:
                last, waiting = data, False
                sweep = data.get("sweep") or {}
                if not book.sweep_id and sweep.get("state") == RUNNING:
                    log(f"wfops: managing {sweep.get('sweep_id')} on {_pod_words(settings, member)}: a pod lost for "
                        f"{settings.recover_after_secs}s is recovered (at most {settings.recover_max} times)")
                book.bind(str(sweep.get("sweep_id") or ""))
                if sweep.get("state") == LOST:  # the pod answers, its queue died with its processes
                    conn.close()
                    _recover_or_lost(settings, member, book, f"its queue was lost ({sweep.get('reason')})", False, log)
                    continue
                if sweep.get("state") != RUNNING:
                    return data
                silence.heard()
            else:
                lost = silence.lost(now, why, gone(settings, member))
                if lost and member.provider == LIUM:
                    _recover_or_lost(settings, member, book, lost, True, log)
                    silence.heard()
                    continue
                if lost and not waiting:  # nothing to rent: its queue may well go on; recovered if it died
                    log(f"wfops: pod {member.name} is {lost}: waiting for it to answer again (an SSH host: nothing "
                        "to rent; its runs restart there if its queue was lost)")
                    waiting = True
                time.sleep(1)
            if deadline is not None and now > deadline:
                return dict(last, wait_timed_out=True)
    except KeyboardInterrupt:
        raise interrupted(_pod_words(settings, member)) from None
    finally:
        conn.close()


def _recover_or_lost(settings: Settings, member: Member, book: Book, why: str, replace: bool, log: Log) -> None:
    """recover(); a replacement lost while it was prepared is said in one line and left to the next round."""
    try:
        recover(settings, member, book, why, replace, log)
    except LostAgain as exc:
        log(exc.message)


def recover(settings: Settings, member: Member, book: Book, why: str, replace: bool, log: Log,
            run_ids: list[str] | None = None, sweep_id: str = "") -> dict[str, Any]:
    """One recovery of `member` (see the module): `replace` a lost Lium pod, else the pod answers (its queue was
    lost); a WfopsError (exit 8) once RECOVER_MAX recoveries are spent. A fleet's pod: `run_ids` its runs,
    `sweep_id` the id its share runs under."""
    before = _pod_words(settings, member)
    if member.provider == LIUM:  # down since the command started: the sweep that rented the pod behind the name
        book.adopt(replaced.current(settings, member.name))
        unready = None if replace else book.unprepared(member.name)
        if unready is not None and unready[0] == replaced.current(settings, member.name):  # this recovery goes on
            log(f"wfops: pod {before} was rented in place of {member.name} by a managed command stopped before the "
                "pod was ready: preparing it now")
            prepare(settings, member, book, unready[0], before, log)
            row = lium.listed(lium.cli("sweep.wait --recover", settings), unready[0]) or {}
            price = row.get("price_per_hour", row.get("price"))
            paid = price if isinstance(price, (int, float)) and not isinstance(price, bool) else None
            return restart(settings, member, book, why, unready[1], log, run_ids or [], sweep_id,
                           {"price_per_hour": paid})
    if book.recoveries >= settings.recover_max:
        line = (f"pod {before} is lost ({why}) and this sweep has spent its RECOVER_MAX={settings.recover_max} "
                "recoveries: stopping; its runs stay lost (raise RECOVER_MAX and run sweep.wait --recover again)")
        if replace:  # a lost pod it rented bills on, of no use: removed, as a recovery would first
            remove_lost(lium.cli("sweep.wait --recover", settings), settings, member, book, log)
        book.note(member.name, "stopped", line)
        raise WfopsError(f"sweep.wait --recover: {line}", EXIT_LOST)
    n = book.spend()
    line = f"lost pod {before}: {why} (recovery {n}/{settings.recover_max})"
    log(f"wfops: {line}")
    book.note(member.name, "loss", line)
    billing: dict[str, Any] | None = None
    if replace:
        billing = {"price_per_hour": replace_lium_pod(settings, member, book, log)}
    return restart(settings, member, book, why, before, log, run_ids or [], sweep_id, billing)


def remove_lost(cli: LiumCLI, settings: Settings, member: Member, book: Book, log: Log) -> dict[str, Any] | None:
    """Remove the lost pod behind the config's name if this sweep rented it (one line); its `lium ps` row (None:
    Lium no longer lists it)."""
    old_id = replaced.current(settings, member.name)
    old = next((r for r in cli.ps() if old_id in (str(r.get("id")), r.get("name"), r.get("huid"))), None)
    if old is not None and str(old["id"]) in book.rented:
        failed = lium.remove(cli, settings, str(old["id"]))
        line = (f"removed lost pod {pod_words(old)}" if failed is None
                else f"could not remove lost pod {pod_words(old)} ({failed}): remove it with `lium rm {old['id']} -y`")
        log(f"wfops: {line}")
        book.note(member.name, "removed" if failed is None else "kept", line, pod_id=str(old["id"]))
    return old


def replace_lium_pod(settings: Settings, member: Member, book: Book, log: Log) -> float | None:
    """Remove the lost pod if this sweep rented it, rent one like it (same spec, same volume), point the config's
    name at it, wait for SSH, bootstrap, checkout; its price per hour (None: unknown)."""
    cli = lium.cli("sweep.wait --recover", settings)
    old = remove_lost(cli, settings, member, book, log)
    if old is not None and str(old["id"]) not in book.rented:
        line = f"lost pod {pod_words(old)} was not rented by this sweep: left as it is"
        if not is_terminal(old):  # silent, not gone: cut off, it may go on with the runs that now run again
            line += (f"; Lium reports it {str(old.get('status')).upper()}, so it may still be running this sweep's "
                     f"runs, which start again on the replacement: remove it (lium rm {old['id']} -y) or stop them")
        log(f"wfops: {line}")
        book.note(member.name, "kept", line, pod_id=str(old["id"]))
    spec = lium.replacement_spec(settings, member)
    try:
        row, _ = lium.rent_replacement(cli, spec, max(1.0, settings.recover_after_secs / 10), log)
    except lium.Stopped as stop:  # Ctrl-C while lium rented: no replacement, so no recovery spent
        book.unspend()
        for before in stop.before:
            log(before)
        raise WfopsError(f"sweep.wait --recover interrupted while it rented a pod in place of {member.name}: "
                         f"{stop.message}; go on with `inv sweep.wait --recover`", stop.code) from None
    except LiumError as exc:
        book.unspend()  # no replacement: RECOVER_MAX counts replacements
        line = f"no replacement for {member.name}: {exc.message}"
        book.note(member.name, "stopped", line)
        raise WfopsError(f"sweep.wait --recover: {line}; the sweep's runs on it stay lost", exc.code) from None
    price = row.get("price_per_hour", row.get("price"))
    price = float(price) if isinstance(price, (int, float)) and not isinstance(price, bool) else None
    cost = f" at ${price:.2f}/h" if price is not None else ""
    volume = f" with volume {spec.lium_volume}" if spec.lium_volume else " with no volume"
    line = (f"rented pod {pod_words(row)}{cost}{volume} in place of {member.name} "
            + (f"(in LIUM_TARGETS, {row['id']} names it)" if resolve.is_fleet(settings)
               else f"(LIUM_TARGET={row['id']} names it)"))
    book.note(member.name, "rented", line, pod_id=str(row["id"]))  # recorded first: it bills from now on
    replaced.record(settings, member.name, str(row["id"]))
    log(f"wfops: {line}")
    prepare(settings, member, book, str(row["id"]), pod_words(row), log)
    return price


class LostAgain(WfopsError):
    """The replacement was lost while it was prepared (Lium reports it gone): one more loss for the loop."""


def prepare(settings: Settings, member: Member, book: Book, pod_id: str, words: str, log: Log) -> None:
    """The replacement `pod_id` (behind the config's name already): wait for SSH, bootstrap, checkout; LostAgain
    when a step fails because the pod was lost meanwhile."""
    quiet: Log = lambda _line: None  # noqa: E731 - the steps' own progress stays out of the one-line story
    try:
        wait_for_pod(settings, member, READY_SECS, log=quiet)
        bootstrap_pod(settings, member, log=quiet)
        checkout_pod(settings, member, log=quiet)
    except WfopsError as exc:
        again = gone(settings, member)
        if again is not None:  # lost meanwhile: one more loss, not a fault of the pod's preparation
            line = f"pod {words} was lost while it was prepared: {again} ({exc.message})"
            book.note(member.name, "loss", line, pod_id=pod_id)
            raise LostAgain(f"wfops: {line}") from None
        # e.g. DATA_DIR on /mnt and no volume came back: the pod bills, say so
        line = (f"replacement pod {words} of {member.name} could not be prepared ({exc.message}); it is "
                f"billing: fix it and run sweep.wait --recover again, or remove it with `lium rm {pod_id} -y`")
        book.note(member.name, "stopped", line, pod_id=pod_id)
        raise WfopsError(f"sweep.wait --recover: {line}", exc.code) from None
    line = f"pod {words} answers, bootstrapped and checked out"
    log(f"wfops: {line}")
    book.note(member.name, "ready", line, pod_id=pod_id)


def restart(settings: Settings, member: Member, book: Book, why: str, before: str, log: Log,
            run_ids: list[str] | None = None, sweep_id: str = "", billing: dict[str, Any] | None = None,
            ) -> dict[str, Any]:
    """`sweep-recover` on the pod: its lost runs as their next attempt, its runs not started as queued; `billing`
    (a replacement: its price) carries what the sweep spent on the lost pod into the budget."""
    try:
        answer = call_once("sweep.recover", settings, wire.SWEEP_RECOVER, member=member,
                           session=settings.sweep_tmux_session, sweep_id=sweep_id or book.sweep_id, why=why,
                           run_ids=run_ids or [], billing=billing or {})
    except WfopsError as exc:
        if billing is None or exc.code != EXIT_NOT_FOUND:
            raise
        line = (f"the replacement of {member.name} has no sweep on it ({exc.message}): the lost pod's outputs were "
                "not on a volume the replacement got back (LIUM_VOLUME; on a fleet LIUM_VOLUMES), so its runs stay "
                "lost; run them again with sweep.retry")
        book.note(member.name, "stopped", line)
        raise WfopsError(f"sweep.wait --recover: {line}", exc.code) from None
    book.bind(str(answer.get("sweep_id") or ""))
    where = _pod_words(settings, member)
    for r in answer.get("restarted") or []:
        if not book.doc.get("attempts", {}).get(r["run_id"]):
            book.ran(r["run_id"], int(r["attempt"]) - 1, before)
        book.ran(r["run_id"], int(r["attempt"]), where)
    for r in answer.get("waiting") or []:  # runs not started: queued on this pod (they may move on a fleet)
        book.ran(r["run_id"], int(r["attempt"]), where, queued=True)
    runs = [f"{r['run_id']} (attempt {r['attempt']})" for r in answer.get("restarted") or []]
    carried = answer.get("spent_before_usd")
    line = (f"restarted on {where}: " + (", ".join(runs) if runs else "no run was running")
            + (f"; queued again: {', '.join(answer['queued'])}" if answer.get("queued") else "")
            + (f"; {usd(carried) or '$0.00'} spent on its earlier pod(s) counts toward the sweep's cost and budget"
               if isinstance(carried, (int, float)) else ""))
    log(f"wfops: {line}")
    book.note(member.name, "restarted", line)
    return answer


__all__ = ["gone", "managed", "managed_wait", "recover", "restart"]

"""Pods: `pod.up` rents a Lium pod, `pod.status` shows it and checks it from inside, `pod.wait` waits
until SSH answers, `pod.down` removes it, `pod.ssh-config` gives it an alias for ssh, rsync and editors.

`pod.status` and `pod.wait` work for every target (Lium, OPS_DEFAULT_HOST, local); `pod.up` and
`pod.down` rent and remove Lium pods through the lium CLI (wfops.targets.lium_cli). See docs/lium.md.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from invoke import Collection

from wfops.errors import ConflictError, ConnectError, LiumError, NotFoundError, UsageError, WfopsError
from wfops.output import pairs
from wfops.settings.load import KEYS_BY_NAME, Settings
from wfops.targets import lium_pods as pods
from wfops.targets.lium_cli import (
    INSTALL_HINT,
    UP_KEYS,
    LiumCLI,
    LiumFailure,
    LiumMissing,
    UpInterrupted,
    interrupts_ignored,
    is_terminal,
    lium_environ,
    not_ready_reason,
    pod_words,
    row_items,
    up_argv,
)
from wfops.targets.target import LOCAL, Target, parse_host, resolve_target
from wfops.tasks import _base
from wfops.tasks._base import JSON_HELP, emit, settings_for, wftask
from wfops.transport.command import PodCommand

UP_TIMEOUT_SECS = 900  # lium up's own default budget: find, rent, wait for the pod
EXIT_INTERRUPTED = 130  # Ctrl-C, as the task boundary reports it
EXIT_TERMINATED = 143  # SIGTERM, likewise
WAIT_TIMEOUT_SECS = 600
POLL_FIRST_SECS = 1.0
POLL_MAX_SECS = 10.0
YES_HELP = "do not ask for confirmation (also LIUM_YES=1); required when stdin is not a terminal"
SSH_CONFIG_FILE = "wfops_config"  # under ~/.ssh, included from ~/.ssh/config
_ALIAS_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


# ------------------------------------------------------------------ shared helpers

def _resolve(settings: Settings, *, use_cache: bool, require_ready: bool) -> pods.Resolution:
    """LIUM_TARGET through Lium (one `lium ps`, or the cache), else OPS_DEFAULT_HOST / local."""
    if settings.lium_target.strip():
        return pods.resolve(settings, use_cache=use_cache, require_ready=require_ready)
    return pods.Resolution(resolve_target(settings))


def _target_view(target: Target | None) -> dict[str, Any] | None:
    if target is None:
        return None
    return {"kind": target.kind, "label": target.label, "user": target.user, "host": target.host or None,
            "port": target.port, "pod_id": target.pod_id}


def _confirm(question: str, yes: bool, command: str) -> None:
    """Ask on a terminal; without one, only --yes (or LIUM_YES=1) approves."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise UsageError(f"{command}: not confirmed, nothing done: {question} needs --yes (or LIUM_YES=1) "
                         "when stdin is not a terminal")
    sys.stderr.write(f"{question[0].upper()}{question[1:]}? [y/N] ")  # stderr: --json keeps stdout clean
    sys.stderr.flush()
    answer = sys.stdin.readline()
    if answer.strip().lower() not in ("y", "yes"):
        raise UsageError(f"{command}: not confirmed; nothing was done")


def _lium_cli(command: str, settings: Settings) -> LiumCLI:
    """The lium CLI, run with the config's LIUM_API_KEY (when it sets one) in its environment."""
    try:
        return LiumCLI.find(lium_environ(settings.lium_api_key))
    except LiumMissing:
        raise LiumMissing(f"{command} works through the lium CLI, which is not installed: {INSTALL_HINT}") from None


def _gib(n: object) -> str:
    return "?" if n is None else f"{int(n) / 2**30:.1f} GiB"  # type: ignore[call-overload]


def _with_lium_target(settings: Settings, value: str) -> Settings:
    return settings.override({"LIUM_TARGET": value})


def _up_values(settings: Settings) -> dict[str, str]:
    """The LIUM_* keys of `lium up` as the file wrote them (up_argv checks and passes them as text)."""
    return {name: settings.raw(name) for name in UP_KEYS}


# ------------------------------------------------------------------ waiting until SSH answers

class _NotYet(ConnectError):
    """The pod exists but has no SSH yet: keep waiting."""


class _Never(ConnectError):
    """The pod reached a terminal status: it will never answer."""


def _wait_for_ssh(settings: Settings, command: str, timeout_secs: int, first_row: Mapping[str, Any] | None = None,
                  cli: LiumCLI | None = None) -> dict:
    """Poll until the pod answers over SSH; then run the command's small script (FSM promotion, config sync).

    A Lium target is looked up on every poll (one `lium ps`: its status and address change while it
    starts; `first_row` skips the first lookup); a pod in a terminal status ends the wait at once.
    """
    deadline = time.monotonic() + max(0, timeout_secs)
    interval = POLL_FIRST_SECS
    last = shown = ""
    row = first_row
    while True:
        target: Target | None = None
        try:
            if row is not None and cli is not None:
                target, row = pods.target_for_row(settings, row, cli), None
            elif settings.lium_target.strip():
                res = pods.resolve(settings, use_cache=False, require_ready=False)
                if res.target is None:
                    raise (_Never if res.row is not None and is_terminal(res.row) else _NotYet)(str(res.problem))
                target = res.target
            else:
                target = resolve_target(settings)
            left = max(1, int(deadline - time.monotonic()) + 1)
            target = dataclasses.replace(target, connect_timeout=min(target.connect_timeout, left))
            with PodCommand(command, settings, target) as cmd:
                state = cmd.call("fsm-show")
            return {"target": _target_view(target), "state": state.get("state"),
                    "waited_secs": round(timeout_secs - (deadline - time.monotonic()), 1)}
        except _Never:
            raise
        except ConnectError as exc:
            last = exc.message if target is None or isinstance(exc, _NotYet) else f"{target.label}: {exc.message}"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ConnectError(f"{command}: gave up after {timeout_secs}s; last: {last}")
        if last != shown:
            print(f"wfops: waiting: {last}", file=sys.stderr)
            shown = last
        time.sleep(min(interval, remaining))
        interval = min(interval * 2, POLL_MAX_SECS)


# ------------------------------------------------------------------ pod.status

def _disk_words(d: Mapping[str, Any] | None, mount_words: bool) -> str:
    if not d:
        return "-"
    where = d.get("mount_point") or "?"
    fs = d.get("fs_type") or "?"
    space = f"{_gib(d.get('free_bytes'))} free of {_gib(d.get('total_bytes'))}"
    if mount_words:
        if not d.get("exists"):
            return f"missing (its disk: {fs} on {where}, {space})"
        if d.get("is_mount"):
            return f"a mount: {fs} from {d.get('source') or '?'}, {space}"
        return f"not a mount point (on {where}, {fs}), {space}"
    place = d.get("path") if d.get("exists") else f"{d.get('path')} (not there yet; nearest: {d.get('existing')})"
    return f"{place}: {fs} on {where}, {space}"


def _status_human(data: dict) -> str:
    t = data.get("target") or {}
    blocks = []
    head: list[tuple[str, object]] = [("target", t.get("label") if t else f"LIUM_TARGET={data.get('lium_target')}")]
    row = data.get("lium")
    if row:
        head += row_items(row)
    blocks.append(pairs(head))
    facts = data.get("pod")
    if not data.get("reachable"):
        blocks.append(pairs([("reachable", f"no: {data.get('error')}")]))
    elif facts:
        gpus = facts.get("gpus") or []
        gpu_text = "; ".join(gpus) if gpus else f"none ({facts.get('gpu_error') or 'nvidia-smi lists no GPU'})"
        blocks.append(pairs([
            ("reachable", "yes"),
            ("user", facts.get("user")),
            ("host", facts.get("host")),
            ("gpus", gpu_text),
            ("/mnt", _disk_words(facts.get("mnt"), mount_words=True)),
            ("repo disk", _disk_words(facts.get("repo"), mount_words=False)),
            ("state", facts.get("state")),
        ]))
    return "\n\n".join(blocks)


@wftask(help={"json": JSON_HELP}, fleet=True)
def status(c, json=False, config=None):
    """Show the pod: its `lium ps` row (Lium), then checks on the pod: user, host, GPUs, /mnt, free space."""
    settings = settings_for(c, config)
    res = _resolve(settings, use_cache=False, require_ready=False)
    data: dict[str, Any] = {"target": _target_view(res.target), "lium_target": settings.lium_target,
                            "lium": dict(res.row) if res.row else None,
                            "reachable": False, "pod": None, "notes": list(res.target.notes) if res.target else []}
    error: ConnectError | None = None
    if res.target is None:
        error = ConnectError(str(res.problem))
    else:
        try:
            with PodCommand("pod.status", settings, res.target) as cmd:
                data["pod"] = cmd.call("pod-facts", repo=settings.ops_remote_repo, mnt="/mnt")
            data["reachable"] = True
        except ConnectError as exc:
            error = exc
    if error is not None:
        data["error"] = error.message
    emit(data, json, lambda: _status_human(data))
    if error is not None:
        raise error


# ------------------------------------------------------------------ pod.wait

@wftask(help={"timeout_secs": f"give up after this many seconds (default {WAIT_TIMEOUT_SECS})", "json": JSON_HELP},
        fleet=True)
def wait(c, timeout_secs=WAIT_TIMEOUT_SECS, json=False, config=None):
    """Wait until the pod answers over SSH (a Lium pod: until it is RUNNING first); exit 4 when it gives up."""
    settings = settings_for(c, config)
    data = _wait_for_ssh(settings, "pod.wait", int(timeout_secs))
    emit(data, json, lambda: f"{data['target']['label']} answers over SSH (workflow state {data['state']})")


# ------------------------------------------------------------------ pod.up

def _rental_words(values: Mapping[str, str], ttl: str) -> str:
    parts = [f"node {values.get('LIUM_EXECUTOR_ID') or 'picked by lium (cheapest match)'}"]
    for key, label in (("LIUM_GPU", "gpu"), ("LIUM_COUNT", "gpus"), ("LIUM_COUNTRY", "country"),
                       ("LIUM_POD_NAME", "name"), ("LIUM_VOLUME", "volume")):
        if values.get(key):
            parts.append(f"{label} {values[key]}")
    return ", ".join(parts) + f", auto-removed after {ttl}"


def _remove(cli: LiumCLI, settings: Settings, pod_id: str) -> str | None:
    """Remove a pod this pod.up rented; None when it is gone, else why removing it failed."""
    try:
        cli.rm(pod_id)
    except LiumError as exc:
        return exc.message
    pods.forget(pod_id=pod_id, environ=lium_environ(settings.lium_api_key))
    return None


def _remove_after_failed_up(cli: LiumCLI, settings: Settings, exc: LiumFailure) -> None:
    """`lium up` failed after renting: the pod bills, so remove it, and say so either way."""
    pod_id = str(exc.data["pod_id"])
    name = exc.data.get("pod_name") or pod_id
    cause = exc.message.split(". ")[0]
    failed = _remove(cli, settings, pod_id)
    if failed:
        raise LiumFailure(f"pod.up rented pod {name} (id {pod_id}) but it failed ({cause}); removing it failed "
                          f"too ({failed}): it is billing, remove it now with `lium rm {pod_id} -y`") from None
    raise LiumFailure(f"pod.up rented pod {name} (id {pod_id}) but it failed ({cause}); wfops removed that pod, "
                      "so it no longer bills") from None


# ------------------------------------------------------------------ pod.up: Ctrl-C

def _interrupted(exc: BaseException | None, message: str) -> WfopsError:
    """The last line of an interrupted pod.up, with the boundary's exit code (130 Ctrl-C, 143 SIGTERM)."""
    terminated = getattr(_base, "Terminated", None)  # the boundary's SIGTERM, a KeyboardInterrupt subclass
    if terminated is not None and isinstance(exc, terminated):
        return WfopsError(f"pod.up terminated (SIGTERM): {message}", EXIT_TERMINATED)
    return WfopsError(f"pod.up interrupted: {message}", EXIT_INTERRUPTED)


def _remove_interrupted(cli: LiumCLI, settings: Settings, pod_id: str, name: object,
                        exc: BaseException | None) -> WfopsError:
    """Stopped after the pod was rented: remove it (another Ctrl-C cannot stop that), and name it if that fails."""
    print(f"wfops: pod.up interrupted; removing pod {name} (id {pod_id}) that it rented "
          "(Ctrl-C is ignored until that is done)", file=sys.stderr, flush=True)
    with interrupts_ignored():
        failed = _remove(cli, settings, pod_id)
    if failed:
        return _interrupted(exc, f"pod {name} (id {pod_id}) is rented and billing, and removing it failed "
                                 f"({failed}); remove it now with `lium rm {pod_id} -y`")
    return _interrupted(exc, f"removed pod {name} (id {pod_id}) that it had rented; nothing bills")


def _rented_before_interrupt(cli: LiumCLI, stop: UpInterrupted, before: list[dict], name: str) -> list[dict]:
    """The pods an interrupted `lium up` left: the one lium said it created, else any new pod of the name it
    rents under (LIUM_POD_NAME, else lium's default, the node's huid) that `lium ps` did not list before."""
    if stop.pod_id:
        return [{"id": stop.pod_id, "name": stop.pod_name or stop.pod_id}]
    if not stop.renting:
        return []  # lium had not sent the rent yet
    wanted = name or stop.renting
    known = {r.get("id") for r in before}
    with interrupts_ignored():
        rows = cli.ps()
    return [r for r in rows if r.get("id") not in known and wanted in (r.get("name"), r.get("huid"))]


def _after_interrupted_up(cli: LiumCLI, settings: Settings, stop: UpInterrupted, before: list[dict],
                          name: str) -> WfopsError:
    try:
        left = _rented_before_interrupt(cli, stop, before, name)
    except LiumError as exc:
        return _interrupted(stop.cause, f"lium was renting node {stop.renting} and wfops could not check whether a "
                                        f"pod was created ({exc.message}); run `lium ps` and remove a new pod "
                                        f"{name or stop.renting} with `lium rm <its id> -y`")
    if not left:
        return _interrupted(stop.cause, "no pod was rented; nothing bills")
    if len(left) == 1:
        return _remove_interrupted(cli, settings, str(left[0]["id"]), left[0].get("name"), stop.cause)
    commands = "; ".join(f"`lium rm {r['id']} -y`" for r in left)
    return _interrupted(stop.cause, f"{len(left)} new pods named {name or stop.renting} appeared while lium was "
                                    f"renting and wfops cannot tell which is its own; they bill: remove yours with "
                                    f"one of {commands}")


# ------------------------------------------------------------------ pod.up: a name already in use

def _pod_to_reuse(rows: list[dict], name: str) -> dict | None:
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


def _rent(cli: LiumCLI, settings: Settings, argv: list[str], timeout: int, before: list[dict]) -> tuple[dict, dict]:
    """`lium up`: the pod row and lium's answer. A failure after the rent, or Ctrl-C, removes the pod."""
    try:
        out = cli.up([*argv, "--timeout", str(timeout)], timeout=timeout + 60)
    except UpInterrupted as stop:
        raise _after_interrupted_up(cli, settings, stop, before, settings.lium_pod_name.strip()) from None
    except LiumFailure as exc:
        if exc.data.get("pod_id"):
            _remove_after_failed_up(cli, settings, exc)
        raise
    row = out.get("pod") if isinstance(out, dict) else None
    if not isinstance(row, dict) or not row.get("id"):
        raise LiumFailure(f"lium up answered without a pod: {str(out)[:200]}; check `lium ps`")
    return row, out


def _up_human(data: dict) -> str:
    row = data["pod"]
    price = f"${float(row['price_per_hour']):.2f}/h" if row.get("price_per_hour") is not None else "price unknown"
    verb = "reusing the running" if data.get("reused") else "rented"
    return (
        f"{verb} Lium pod {pod_words(row)}: {row.get('config') or row.get('gpu_type') or '?'} at {price}; "
        f"{dict(row_items(row))['ttl']}\n"
        f"SSH answers at {data['ssh']} (workflow state {data['state']})\n\n"
        f"put this line in your config ({data['config_file']}):\n{data['config_line']}\n"
        f"(LIUM_TARGET={row.get('name')} works too while no other pod has that name)"
    )


@wftask(help={
    "yes": YES_HELP,
    "timeout_secs": f"budget for finding, renting and starting the pod, in seconds (default {UP_TIMEOUT_SECS})",
    "count": "rent this many pods, one after another (named LIUM_POD_NAME-1, -2, ...; each with LIUM_TTL); "
             "prints the LIUM_TARGETS line of the fleet",
    "json": JSON_HELP,
})
def up(c, yes=False, timeout_secs=UP_TIMEOUT_SECS, count=1, json=False, config=None):
    """Rent a Lium pod from the LIUM_* keys (or reuse the running pod of that name), wait until SSH answers,
    print the LIUM_TARGET line for the config. Ctrl-C removes a pod it rented."""
    settings = settings_for(c, config)
    if count < 1:
        raise UsageError("--count must be 1 or more")
    cli = _lium_cli("pod.up", settings)
    if count > 1:
        _up_fleet(settings, cli, count, bool(yes or settings.lium_yes), int(timeout_secs), json)
        return
    data = _up_one(settings, cli, bool(yes), int(timeout_secs))
    emit(data, json, lambda: _up_human(data))


def _up_fleet(settings: Settings, cli: LiumCLI, count: int, yes: bool, timeout_secs: int, json: bool) -> None:
    """N pods, rented one after another (a Ctrl-C removes the pod being rented, as for one pod); the ones up
    before a failure stay and are named, with their LIUM_TARGETS line."""
    name = settings.lium_pod_name.strip()
    _, ttl = up_argv(_up_values(settings), KEYS_BY_NAME["LIUM_TTL"].default)
    _confirm(f"rent {count} Lium pods ({_rental_words(_up_values(settings), ttl)} each); they bill per second until "
             "removed", yes, "pod.up")
    up: list[dict] = []
    for i in range(1, count + 1):
        one = settings.override({"LIUM_POD_NAME": f"{name}-{i}" if name else ""})
        try:
            data = _up_one(one, cli, True, timeout_secs)
        except (WfopsError, KeyboardInterrupt) as exc:
            if up:
                ids = ",".join(str(d["pod"]["id"]) for d in up)
                print(f"wfops: pod.up --count {count}: {len(up)} pod(s) are up and billing before this failure: "
                      f"LIUM_TARGETS={ids}", file=sys.stderr)
            raise exc
        print(f"wfops: pod {i}/{count}: {pod_words(data['pod'])} answers at {data['ssh']}", file=sys.stderr)
        up.append(data)
    line = "LIUM_TARGETS=" + ",".join(str(d["pod"]["id"]) for d in up)
    result = {"pods": up, "config_line": line, "config_file": up[0]["config_file"]}
    emit(result, json, lambda: "\n".join(
        [f"{'reusing' if d['reused'] else 'rented'} {pod_words(d['pod'])} at {d['ssh']}" for d in up]
        + ["", f"put this line in your config ({result['config_file']}):", line]))


def _up_one(settings: Settings, cli: LiumCLI, yes: bool, timeout_secs: int) -> dict:
    argv, ttl = up_argv(_up_values(settings), KEYS_BY_NAME["LIUM_TTL"].default)
    timeout = max(60, int(timeout_secs))
    started = time.monotonic()
    before = cli.ps()  # a pod with this name already? and, after a Ctrl-C, which pod is new
    row = _pod_to_reuse(before, settings.lium_pod_name.strip())
    rented, out = row is None, {}
    if row is not None:
        print(f"wfops: pod.up: pod {pod_words(row)} already has this name and is running; using it, nothing "
              "rented", file=sys.stderr)
    else:
        _confirm(f"rent a Lium pod ({_rental_words(_up_values(settings), ttl)}); it bills per second until removed",
                 bool(yes or settings.lium_yes), "pod.up")
        row, out = _rent(cli, settings, argv, timeout, before)
    settings = _with_lium_target(settings, str(row["id"]))
    try:
        left = max(60, int(timeout - (time.monotonic() - started)))
        waited = _wait_for_ssh(settings, "pod.up", left, first_row=row, cli=cli)
    except KeyboardInterrupt as exc:
        if rented:  # rented by this pod.up: it goes; a reused pod stays as it was
            raise _remove_interrupted(cli, settings, str(row["id"]), row.get("name") or row.get("huid"), exc) from None
        raise
    except (ConnectError, LiumError) as exc:
        billing = "rented and billing" if rented else "running"
        raise ConnectError(f"pod {pod_words(row)} is {billing}, but SSH does not answer ({exc.message}); "
                           f"check it with pod.status (LIUM_TARGET={row['id']}), remove it with pod.down") from None
    target = waited["target"]
    data = {
        "pod": row,
        "reused": not rented,
        "termination_time": out.get("termination_time"),
        "ssh": f"{target['user']}@{target['host']}:{target['port']}",
        "state": waited["state"],
        "config_line": f"LIUM_TARGET={row['id']}",
        "config_file": str(settings.path) if settings.path else "workflow.env",
    }
    return data


# ------------------------------------------------------------------ pod.down

@wftask(help={
    "yes": YES_HELP + "; with it an unreachable pod is removed unchecked",
    "force": "remove even while a sweep is running on the pod (and an unreachable pod, unchecked)",
    "json": JSON_HELP,
})
def down(c, yes=False, force=False, json=False, config=None):
    """Remove the Lium pod: refuse while a sweep runs (unless --force), reset the workflow state to INIT, `lium rm`."""
    settings = settings_for(c, config)
    value = settings.lium_target.strip()
    if not value:
        raise UsageError("pod.down removes a Lium pod and LIUM_TARGET is not set (a host reached through "
                         "OPS_DEFAULT_HOST was not rented by wfops: end it where you rented it)")
    cli = _lium_cli("pod.down", settings)
    res = pods.resolve(settings, use_cache=False, require_ready=False, fallback=False)
    row = res.row
    assert row is not None
    approved = bool(yes or settings.lium_yes)
    price = f", ${float(row['price_per_hour']):.2f}/h" if row.get("price_per_hour") is not None else ""
    _confirm(f"remove Lium pod {pod_words(row)} ({row.get('status')}{price}); this cannot be undone",
             approved, "pod.down")
    pod_side: dict[str, Any] | None = None
    warning = unreachable = None
    if res.target is None and not_ready_reason(row):
        warning = f"{res.problem}: nothing to check on it"
    elif res.target is None:
        unreachable = str(res.problem)
    else:
        try:
            with PodCommand("pod.down", settings, res.target) as cmd:
                pod_side = cmd.call("pod-down", session=settings.sweep_tmux_session, force=bool(force),
                                    reason="pod removed (pod.down)")
        except ConnectError as exc:
            unreachable = f"cannot reach pod {pod_words(row)} ({exc.message})"
    if unreachable is not None:
        if not (approved or force):
            raise ConnectError(f"{unreachable}; nothing was removed. pod.down --yes removes it without checking "
                               "for a running sweep")
        warning = f"{unreachable}: no check for a running sweep and the workflow state was not reset; removing it"
    if warning:
        print(f"wfops: {warning}", file=sys.stderr)
    try:
        removed = cli.rm(str(row["id"]))
    except LiumFailure as exc:
        if exc.lium_exit == 5:
            raise NotFoundError(f"pod {pod_words(row)} is already gone ({exc.message})") from None
        raise
    pods.forget(value, pod_id=str(row["id"]), environ=lium_environ(settings.lium_api_key))
    if res.target is not None:  # the keeper of a removed pod would idle for WF_PERSIST_SECS
        from wfops.transport import warm

        warm.stop(warm.socket_path(res.target, warm.private_dir(create=False)))
    gone = (removed.get("removed") or [{}])[0] if isinstance(removed, dict) else {}
    data = {"pod": dict(row), "removed": gone, "pod_side": pod_side, "warning": warning}
    if isinstance(removed, dict) and removed.get("failed"):
        raise LiumFailure(f"lium rm could not remove pod {pod_words(row)}; check `lium ps`")

    def human() -> str:
        spent = gone.get("spent_usd")
        lines = [f"removed Lium pod {pod_words(row)}" + (f": up {gone.get('uptime')}" if gone.get("uptime") else "")
                 + (f", spent ≈${float(spent):.2f}" if spent is not None else "")]
        if pod_side:
            lines.append(f"workflow state on the pod: INIT (was {pod_side.get('state_before')})")
        lines.append(f"LIUM_TARGET={value} names no pod now: point it at the next one (pod.up prints the line)")
        return "\n".join(lines)

    emit(data, json, human)


# ------------------------------------------------------------------ pod.ssh-config

def _ssh_value(value: str) -> str:
    if any(ch in value for ch in '"\n\r'):
        raise UsageError(f"cannot write {value!r} into an ssh_config file")
    return f'"{value}"' if any(ch.isspace() for ch in value) else value


def ssh_config_block(alias: str, target: Target, comment: str) -> str:
    """The `Host ALIAS` block for a target, between markers that a later run replaces."""
    lines = [f"# >>> wfops {alias}: {comment}", f"Host {alias}", f"    HostName {_ssh_value(target.host)}"]
    if target.port:
        lines.append(f"    Port {target.port}")
    if target.user:
        lines.append(f"    User {_ssh_value(target.user)}")
    if target.key_filename:
        lines += [f"    IdentityFile {_ssh_value(target.key_filename)}", "    IdentitiesOnly yes"]
    if target.known_hosts:
        lines += [f"    UserKnownHostsFile {_ssh_value(target.known_hosts)}", "    StrictHostKeyChecking yes"]
    lines.append(f"# <<< wfops {alias}")
    return "\n".join(lines) + "\n"


def replace_block(text: str, alias: str, block: str) -> str:
    """`text` with the block of `alias` replaced (or appended)."""
    start, end = f"# >>> wfops {alias}:", f"# <<< wfops {alias}"
    out, skipping = [], False
    for line in text.splitlines(keepends=True):
        if line.startswith(start):
            skipping = True
            continue
        if skipping:
            if line.rstrip("\n") == end:
                skipping = False
            continue
        out.append(line)
    kept = "".join(out)
    if kept and not kept.endswith("\n"):
        kept += "\n"
    return kept + block


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.wfops.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _ensure_include(ssh_dir: Path, managed: Path) -> bool:
    """Make ~/.ssh/config include the managed file (at its top, where an Include applies to every host)."""
    main = ssh_dir / "config"
    text = main.read_text(encoding="utf-8") if main.is_file() else ""
    include = f"Include {_ssh_value(str(managed))}"
    if any(line.strip() == include for line in text.splitlines()):
        return False
    _write_private(main, f"# added by wfops pod.ssh-config: Host blocks for pods\n{include}\n\n{text}")
    return True


def _default_alias(res: pods.Resolution, target: Target) -> str:
    if res.row:
        for candidate in (res.row.get("name"), res.row.get("huid")):
            word = re.sub(r"[^A-Za-z0-9._-]+", "-", str(candidate or "")).strip("-.")
            if word and _ALIAS_RE.match(word):
                return word
    return "wfops-" + re.sub(r"[^A-Za-z0-9._-]+", "-", target.host).strip("-.")


@wftask(help={
    "alias": "the ssh alias (default: the pod's name, else its huid)",
    "file": f"ssh_config file for the block (default ~/.ssh/{SSH_CONFIG_FILE}, included from ~/.ssh/config)",
    "print_": "only print the block; write nothing",
    "json": JSON_HELP,
})
def ssh_config(c, alias=None, file=None, print_=False, json=False, config=None):
    """Write an ssh_config block for the pod, so `ssh ALIAS`, rsync and editors reach it by name."""
    settings = settings_for(c, config)
    res = _resolve(settings, use_cache=True, require_ready=True)
    target = res.target
    assert target is not None
    if target.kind == LOCAL:
        raise UsageError("the target is `local` (this machine): it needs no ssh_config entry")
    if target.kind == "ssh":
        user, _host, port = parse_host(settings.ops_default_host)
        if user is None and port is None:
            raise UsageError(f"OPS_DEFAULT_HOST={settings.ops_default_host} is already an ssh alias or "
                             "host name: `ssh` reaches it as it is")
    name = alias or _default_alias(res, target)
    if not _ALIAS_RE.match(name):
        raise UsageError(f"--alias {name!r}: use letters, digits, '.', '_' or '-' (up to 64)")
    comment = target.label + ("; host key pinned by lium" if target.known_hosts else "")
    block = ssh_config_block(name, target, comment)
    ssh_dir = Path.home() / ".ssh"
    path = Path(file).expanduser() if file else ssh_dir / SSH_CONFIG_FILE
    data: dict[str, Any] = {"alias": name, "file": None if print_ else str(path), "block": block,
                            "include_added": False}
    if not print_:
        existing = path.read_text(encoding="utf-8") if path.is_file() else ""
        _write_private(path, replace_block(existing, name, block))
        if path.resolve() != (ssh_dir / "config").resolve():
            data["include_added"] = _ensure_include(ssh_dir, path.resolve())

    def human() -> str:
        if print_:
            return block.rstrip("\n")
        main = ssh_dir / "config"
        added = f"\nadded `Include {path.resolve()}` at the top of {main}" if data["include_added"] else ""
        return (f"wrote Host {name} to {path}{added}\n"
                f"try: ssh {name}   |   rsync -a {name}:/mnt/pod_artifacts/ ./artifacts/   |   "
                f"an editor's Remote-SSH: {name}")

    emit(data, json, human)


ns = Collection("pod", up, status, wait, down, ssh_config)

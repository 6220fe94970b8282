"""Pods: `pod.up` rents a Lium pod, `pod.status` shows it and checks it from inside, `pod.wait` waits until SSH
answers, `pod.down` removes it, `pod.ssh-config` gives it an alias for ssh, rsync and editors. `pod.status` and
`pod.wait` work for every target; `pod.up` / `pod.down` rent and remove Lium pods (wfops.targets.providers.lium)."""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from invoke import Collection

from wfops import hints
from wfops.agent import wire
from wfops.errors import ConfigError, ConnectError, LiumError, UsageError, WfopsError
from wfops.fanout import Log, to_stderr
from wfops.interrupt import EXIT_INTERRUPTED, EXIT_TERMINATED
from wfops.settings.load import KEYS_BY_NAME, Settings
from wfops.targets import resolve
from wfops.targets import ssh_config as sshcfg
from wfops.targets.lium_cli import LiumCLI
from wfops.targets.lium_pods import target_for_row
from wfops.targets.lium_rows import is_terminal, not_ready_reason, pod_words, up_argv
from wfops.targets.providers import lium
from wfops.targets.target import LIUM, Member, Target
from wfops.tasks import _base, pod_text
from wfops.tasks._base import JSON_HELP, PodWork, emit, on_pods, settings_for, wftask
from wfops.transport import warm
from wfops.transport.command import PodCommand

UP_TIMEOUT_SECS = 900  # lium up's own default budget: find, rent, wait for the pod
WAIT_TIMEOUT_SECS = 600
POLL_FIRST_SECS = 1.0
POLL_MAX_SECS = 10.0
YES_HELP = "do not ask for confirmation (also LIUM_YES=1); required when stdin is not a terminal"
SSH_CONFIG_FILE = "wfops_config"  # under ~/.ssh, included from ~/.ssh/config


# ------------------------------------------------------------------ shared helpers

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


# ------------------------------------------------------------------ waiting until SSH answers

class _NotYet(ConnectError):
    """The pod exists but has no SSH yet: keep waiting."""


class _Never(ConnectError):
    """The pod reached a terminal status: it will never answer."""


def _wait_for_ssh(settings: Settings, command: str, timeout_secs: int, member: Member,
                  first_row: Mapping[str, Any] | None = None, cli: LiumCLI | None = None,
                  log: Log = to_stderr) -> dict[str, Any]:
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
                target, row = target_for_row(settings, row, cli, name=member.name), None
            else:
                res = resolve.resolve(settings, member, use_cache=False, require_ready=False)
                if res.target is None:
                    raise (_Never if res.row is not None and is_terminal(res.row) else _NotYet)(str(res.problem))
                target = res.target
            left = max(1, int(deadline - time.monotonic()) + 1)
            target = dataclasses.replace(target, connect_timeout=min(target.connect_timeout, left))
            with PodCommand(command, settings, target, log=log) as cmd:
                state = cmd.call(wire.FSM_SHOW)
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
            log(f"wfops: waiting: {last}")
            shown = last
        time.sleep(min(interval, remaining))
        interval = min(interval * 2, POLL_MAX_SECS)


# ------------------------------------------------------------------ pod.status

def pod_status(settings: Settings, member: Member, log: Log = to_stderr) -> dict:
    """One pod: its `lium ps` row (Lium), then checks on the pod (user, host, GPUs, /mnt, free space); what
    `pod.status --json` prints. Unreachable: `reachable` false and `error` says why."""
    res = resolve.resolve(settings, member, use_cache=False, require_ready=False)
    data: dict[str, Any] = {"target": _target_view(res.target),
                            "lium_target": member.name if member.provider == LIUM else "",
                            "lium": dict(res.row) if res.row else None,
                            "reachable": False, "pod": None, "notes": list(res.target.notes) if res.target else []}
    if res.target is None:
        data["error"] = ConnectError(str(res.problem)).message
        return data
    try:
        with PodCommand("pod.status", settings, res.target, log=log) as cmd:
            data["pod"] = cmd.call("pod-facts", repo=settings.ops_remote_repo, mnt="/mnt")
        data["reachable"] = True
    except ConnectError as exc:
        data["error"] = exc.message
    return data


def _unreachable(data: dict) -> WfopsError | None:
    return ConnectError(data["error"]) if "error" in data else None


@wftask(help={"json": JSON_HELP})
def status(c: Any, json: bool = False, config: str | None = None) -> None:
    """Show the pod: its Lium row, user, GPUs, /mnt, free space."""
    on_pods(settings_for(c, config), json, PodWork(pod_status, pod_text.status_human, verdict=_unreachable))


# ------------------------------------------------------------------ pod.wait

def wait_for_pod(settings: Settings, member: Member, timeout_secs: int = WAIT_TIMEOUT_SECS,
                 log: Log = to_stderr) -> dict:
    """Wait until one pod answers over SSH (a Lium pod: until it is RUNNING first): what `pod.wait --json`
    prints; a ConnectError (exit 4) when it gives up."""
    return _wait_for_ssh(settings, "pod.wait", int(timeout_secs), member, log=log)


@wftask(help={"timeout_secs": f"give up after this many seconds (default {WAIT_TIMEOUT_SECS})", "json": JSON_HELP})
def wait(c: Any, timeout_secs: int = WAIT_TIMEOUT_SECS, json: bool = False, config: str | None = None) -> None:
    """Wait until the pod answers over SSH (exit 4: it gave up)."""
    on_pods(settings_for(c, config), json, PodWork(
        lambda s, m, log: wait_for_pod(s, m, timeout_secs, log),
        lambda data: f"{data['target']['label']} answers over SSH (workflow state {data['state']})"))


# ------------------------------------------------------------------ pod.up

def _interrupted(stop: lium.Stopped) -> WfopsError:
    """The last line of an interrupted pod.up, with the boundary's exit code (130 Ctrl-C, 143 SIGTERM); the lines
    that go above it (one `lium rm` line per pod it could not remove) are printed now."""
    for line in stop.before:
        print(line, file=sys.stderr)
    if isinstance(stop.cause, _base.Terminated):  # the boundary's SIGTERM, a KeyboardInterrupt subclass
        return WfopsError(f"pod.up terminated (SIGTERM): {stop.message}", EXIT_TERMINATED)
    return WfopsError(f"pod.up interrupted: {stop.message}", EXIT_INTERRUPTED)


@wftask(help={
    "yes": YES_HELP,
    "timeout_secs": f"budget for finding, renting and starting the pod, in seconds (default {UP_TIMEOUT_SECS})",
    "count": "rent this many pods, one after another (named LIUM_POD_NAME-1, -2, ...; each with LIUM_TTL); "
             "prints the LIUM_TARGETS line of the fleet; Ctrl-C removes every pod it rented",
    "json": JSON_HELP,
})
def up(c: Any, yes: bool = False, timeout_secs: int = UP_TIMEOUT_SECS, count: int = 1, json: bool = False,
       config: str | None = None) -> None:
    """Rent a Lium pod (or reuse it) and wait until SSH answers.

    From the LIUM_* keys; prints the LIUM_TARGET line for the config. Ctrl-C removes a pod it rented."""
    settings = settings_for(c, config)
    if count < 1:
        raise UsageError("--count must be 1 or more")
    cli = lium.cli("pod.up", settings)
    try:
        if count > 1:
            _up_fleet(settings, cli, count, bool(yes or settings.lium_yes), int(timeout_secs), json)
            return
        data = _up_one(settings, cli, bool(yes), int(timeout_secs))
    except lium.Stopped as stop:
        raise _interrupted(stop) from None
    emit(data, json, lambda: pod_text.up_human(data))


def _up_fleet(settings: Settings, cli: LiumCLI, count: int, yes: bool, timeout_secs: int, json: bool) -> None:
    """N pods, rented one after another. Ctrl-C removes every pod it rented (Stopped); after a failure the pods
    already up stay and are named, with their LIUM_TARGETS line."""
    name = settings.lium_pod_name.strip()
    _, ttl = up_argv(lium.up_values(settings), KEYS_BY_NAME["LIUM_TTL"].default)
    _confirm(f"rent {count} Lium pods ({lium.rental_words(lium.up_values(settings), ttl)} each); they bill per second "
             "until removed", yes, "pod.up")
    up: list[dict[str, Any]] = []  # a pod is in it as soon as _up_one returns: no Ctrl-C window loses one
    try:
        for i in range(1, count + 1):
            one = settings.override({"LIUM_POD_NAME": f"{name}-{i}" if name else ""})
            try:
                up.append(_up_one(one, cli, True, timeout_secs))
            except lium.Stopped:
                raise
            except WfopsError:
                if up:
                    print(f"wfops: pod.up --count {count}: {len(up)} pod(s) are up and billing before this failure: "
                          f"LIUM_TARGETS={','.join(str(d['pod']['id']) for d in up)}", file=sys.stderr)
                raise
            print(f"wfops: pod {i}/{count}: {pod_words(up[-1]['pod'])} answers at {up[-1]['ssh']}", file=sys.stderr)
    except lium.Stopped as stop:
        raise stop.after(lium.remove_rented(cli, settings, _rented(up))) from None
    except KeyboardInterrupt as exc:
        raise lium.Stopped(exc, lium.remove_rented(cli, settings, _rented(up))) from None
    line = "LIUM_TARGETS=" + ",".join(str(d["pod"]["id"]) for d in up)
    result = {"pods": up, "config_line": line, "config_file": up[0]["config_file"]}
    emit(result, json, lambda: "\n".join(
        [f"{'reusing' if d['reused'] else 'rented'} {pod_words(d['pod'])} at {d['ssh']}" for d in up]
        + ["", f"put this line in your config ({result['config_file']}):", line]))


def _rented(up: list[dict[str, Any]]) -> list[lium.Rented]:
    return [lium.Rented(str(d["pod"].get("name") or d["pod"]["id"]), str(d["pod"]["id"]))
            for d in up if not d["reused"]]


def _up_one(settings: Settings, cli: LiumCLI, yes: bool, timeout_secs: int) -> dict[str, Any]:
    argv, ttl = up_argv(lium.up_values(settings), KEYS_BY_NAME["LIUM_TTL"].default)
    timeout = max(60, int(timeout_secs))
    started = time.monotonic()
    before = cli.ps()  # a pod with this name already? and, after a Ctrl-C, which pod is new
    row = lium.pod_to_reuse(before, settings.lium_pod_name.strip())
    rented, out = row is None, dict[str, Any]()
    if row is not None:
        print(f"wfops: pod.up: pod {pod_words(row)} already has this name and is running; using it, nothing "
              "rented", file=sys.stderr)
    else:
        _confirm(f"rent a Lium pod ({lium.rental_words(lium.up_values(settings), ttl)}); it bills per second until "
                 "removed",
                 bool(yes or settings.lium_yes), "pod.up")
        row, out = lium.rent(cli, settings, argv, timeout, before)
    try:
        member = resolve.lium_pod(str(row["id"]))
        left = max(60, int(timeout - (time.monotonic() - started)))
        waited = _wait_for_ssh(settings, "pod.up", left, member, first_row=row, cli=cli)
    except KeyboardInterrupt as exc:
        if rented:  # rented by this pod.up: it goes; a reused pod stays as it was
            pod = lium.Rented(str(row.get("name") or row.get("huid")), str(row["id"]))
            raise lium.Stopped(exc, lium.remove_rented(cli, settings, [pod])) from None
        raise
    except (ConnectError, LiumError) as exc:
        billing = "rented and billing" if rented else "running"
        raise ConnectError(f"pod {pod_words(row)} is {billing}, but SSH does not answer ({exc.message}); "
                           f"check it with pod.status (LIUM_TARGET={row['id']}), remove it with pod.down") from None
    target = waited["target"]
    return {
        "pod": row,
        "reused": not rented,
        "termination_time": out.get("termination_time"),
        "ssh": f"{target['user']}@{target['host']}:{target['port']}",
        "state": waited["state"],
        "config_line": f"LIUM_TARGET={row['id']}",
        "config_file": str(settings.path) if settings.path else "workflow.env",
    }


# ------------------------------------------------------------------ pod.down

def _pod_to_remove(settings: Settings) -> Member:
    """pod.down's pod: one Lium pod of the config; a fleet without WF_POD is refused, naming its pods."""
    try:
        member = resolve.one(settings)
    except ConfigError:
        if not resolve.is_fleet(settings):
            raise
        listed = resolve.names(settings)
        keys = " / ".join(sorted({m.source for m in resolve.members(settings)}))
        example = f"{resolve.POD_ENV}={listed[0]} {hints.command('pod.down', settings=settings)}"
        raise UsageError(f"pod.down removes one pod and the config names a fleet of {len(listed)} pods "
                         f"({', '.join(listed)}): choose it with {resolve.POD_ENV}=NAME (e.g. {example}), then take "
                         f"it out of {keys}") from None
    if member.provider != LIUM:
        raise UsageError(f"pod.down removes a Lium pod and {member.source}={member.name} is reached over SSH (a "
                         "host wfops did not rent: end it where you rented it)")
    return dataclasses.replace(member, fallback=None)  # never another host in place of the pod to remove


def _check_before_removal(settings: Settings, res: Any, row: Mapping[str, Any], approved: bool,
                          force: bool) -> tuple[dict[str, Any] | None, str | None]:
    """Reset the workflow state on the pod (refused while a sweep runs, unless --force): (what the pod said, a
    warning); an unreachable pod is removed unchecked only with --yes or --force."""
    warning = unreachable = None
    if res.target is None and not_ready_reason(row):
        return None, f"{res.problem}: nothing to check on it"
    if res.target is None:
        unreachable = str(res.problem)
    else:
        try:
            with PodCommand("pod.down", settings, res.target) as cmd:
                return cmd.call("pod-down", session=settings.sweep_tmux_session, force=bool(force),
                                reason="pod removed (pod.down)"), None
        except ConnectError as exc:
            unreachable = f"cannot reach pod {pod_words(row)} ({exc.message})"
    if not (approved or force):
        raise ConnectError(f"{unreachable}; nothing was removed. pod.down --yes removes it without checking "
                           "for a running sweep")
    warning = f"{unreachable}: no check for a running sweep and the workflow state was not reset; removing it"
    return None, warning


@wftask(help={
    "yes": YES_HELP + "; with it an unreachable pod is removed unchecked",
    "force": "remove even while a sweep is running on the pod (and an unreachable pod, unchecked)",
    "json": JSON_HELP,
})
def down(c: Any, yes: bool = False, force: bool = False, json: bool = False, config: str | None = None) -> None:
    """Remove the Lium pod (refused while a sweep runs).

    On a fleet: the one WF_POD names. The state is reset to INIT, then `lium rm`; --force: even mid-sweep."""
    settings = settings_for(c, config)
    member = _pod_to_remove(settings)
    cli = lium.cli("pod.down", settings)
    res = resolve.resolve(settings, member, use_cache=False, require_ready=False)
    row = res.row
    assert row is not None
    approved = bool(yes or settings.lium_yes)
    price = f", ${float(row['price_per_hour']):.2f}/h" if row.get("price_per_hour") is not None else ""
    _confirm(f"remove Lium pod {pod_words(row)} ({row.get('status')}{price}); this cannot be undone",
             approved, "pod.down")
    pod_side, warning = _check_before_removal(settings, res, row, approved, bool(force))
    if warning:
        print(f"wfops: {warning}", file=sys.stderr)
    try:
        gone = lium.remove_pod(cli, settings, row, member.name)
    finally:
        if res.target is not None:  # the keeper of a removed pod would idle for WF_PERSIST_SECS
            warm.stop_target(warm.socket_path(res.target, warm.private_dir(create=False)))
    data = {"pod": dict(row), "removed": gone, "pod_side": pod_side, "warning": warning}
    emit(data, json, lambda: pod_text.down_human(row, gone, pod_side, resolve.gone_hint(settings, member)))


# ------------------------------------------------------------------ pod.ssh-config

@wftask(help={
    "alias": "the ssh alias (default: the pod's name, else its huid)",
    "file": f"ssh_config file for the block (default ~/.ssh/{SSH_CONFIG_FILE}, included from ~/.ssh/config)",
    "print_": "only print the block; write nothing",
    "json": JSON_HELP,
})
def ssh_config(c: Any, alias: str | None = None, file: str | None = None, print_: bool = False, json: bool = False,
               config: str | None = None) -> None:
    """Write an ssh_config block so ssh reaches the pod by name."""
    settings = settings_for(c, config)
    member = resolve.one(settings)
    res = resolve.resolve(settings, member)
    target = res.target
    assert target is not None
    sshcfg.check_wanted(member, target)
    name = alias or sshcfg.default_alias(res.row, target)
    if not sshcfg.ALIAS_RE.match(name):
        raise UsageError(f"--alias {name!r}: use letters, digits, '.', '_' or '-' (up to 64)")
    comment = target.label + ("; host key pinned by lium" if target.known_hosts else "")
    block = sshcfg.ssh_config_block(name, target, comment)
    ssh_dir = Path.home() / ".ssh"
    path = Path(file).expanduser() if file else ssh_dir / SSH_CONFIG_FILE
    data: dict[str, Any] = {"alias": name, "file": None if print_ else str(path), "block": block,
                            "include_added": False}
    if not print_:
        existing = path.read_text(encoding="utf-8") if path.is_file() else ""
        sshcfg.write_private(path, sshcfg.replace_block(existing, name, block))
        if path.resolve() != (ssh_dir / "config").resolve():
            data["include_added"] = sshcfg.ensure_include(ssh_dir, path.resolve())

    def human() -> str:
        if print_:
            return block.rstrip("\n")
        main = ssh_dir / "config"
        added = f"\nadded `Include {path.resolve()}` at the top of {main}" if data["include_added"] else ""
        return (f"wrote Host {name} to {path}{added}\ntry: ssh {name}   # an editor's Remote-SSH finds it too\n"
                f"     rsync -a {name}:{pod_text.pasteable_path(settings.ops_remote_outputs_dir)}/ ./artifacts/")

    emit(data, json, human)


ns = Collection("pod", up, status, wait, down, ssh_config)

"""The "Lium failures" issue, with the real lium CLI, the fake API and the loopback sshd as the pod:

- Ctrl-C during pod.up removes the pod it rented (or names it with the exact `lium rm` command);
- an API that answers 502/503/429, or too slowly, falls back like an unreachable one, and the failure is
  remembered for a short while, so an outage costs one lookup, not one per command;
- LIUM_API_KEY in the config reaches lium (its environment only) and never shows anywhere else;
- pod.up with a name already in use reuses the running pod of that name or refuses (exit 10).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import WFOPS, Result
from tests.lium.conftest import LIUM, LiumPod
from tests.lium.fake_lium import FakeLium
from tests.realparts import free_port
from tests.slowness import scaled
from wfops.targets.lium_cli import LiumUnreachable, error_from, up_interrupted


def one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    return lines[0]


def up_config(lpod: LiumPod, fake: FakeLium, **kw: str) -> None:
    lpod.configure(LIUM_EXECUTOR_ID=fake.executor_huid, LIUM_POD_NAME="mypod", **kw)


def removed_line(pod_id: str) -> str:
    return f"wfops: pod.up interrupted: removed pod mypod (id {pod_id}) that it had rented; nothing bills"


def posts(fake: FakeLium) -> list[str]:
    return [p for m, p in fake.requests if m == "POST"]


def cache_file(lpod: LiumPod) -> Path:
    return lpod.home / ".cache" / "wfops" / "lium-targets.json"


# ------------------------------------------------------------------ Ctrl-C during pod.up

class Running:
    """wfops started as a terminal starts it: in its own process group, so Ctrl-C reaches wfops and lium."""

    def __init__(self, lpod: LiumPod, *args: str) -> None:
        self.proc = subprocess.Popen([str(WFOPS), *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=lpod.env(), cwd=lpod.root.parent,
                                     start_new_session=True)
        self.out: list[str] = []
        self.err: list[str] = []
        self.readers = [threading.Thread(target=self._read, args=(stream, lines), daemon=True)
                        for stream, lines in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for t in self.readers:
            t.start()

    @staticmethod
    def _read(stream, lines: list[str]) -> None:
        for line in stream:
            lines.append(line)

    def wait_for(self, text: str, timeout: float = 90) -> str:
        deadline = time.monotonic() + scaled(timeout)
        while time.monotonic() < deadline:
            for line in list(self.err):
                if text in line:
                    return line
            assert self.proc.poll() is None, f"wfops ended before {text!r}:\n{''.join(self.err)}"
            time.sleep(0.05)
        raise AssertionError(f"no {text!r} within {timeout}s:\n{''.join(self.err)}")

    def ctrl_c(self, whole_group: bool = True) -> None:
        if whole_group:
            os.killpg(self.proc.pid, signal.SIGINT)  # what the terminal does
        else:
            self.proc.send_signal(signal.SIGINT)  # wfops alone: it must stop lium itself

    def finish(self, timeout: float = 90) -> Result:
        rc = self.proc.wait(timeout=scaled(timeout))
        for t in self.readers:
            t.join(timeout=10)
        return Result(rc, "".join(self.out), "".join(self.err))

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def __enter__(self) -> Running:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


def interrupted_up(lpod: LiumPod, fake: FakeLium, waiting_for: str, whole_group: bool = True):
    """`pod.up --yes`, given Ctrl-C once `waiting_for` shows on its stderr: (the pod it rented, how it ended)."""
    with Running(lpod, "pod.up", "--yes") as run:
        run.wait_for(waiting_for)
        (pod,) = fake.pods.values()
        run.ctrl_c(whole_group)
        return pod, run.finish()


@pytest.mark.parametrize("whole_group", [True, False], ids=["terminal-ctrl-c", "sigint-to-wfops-only"])
def test_ctrl_c_while_lium_up_waits_removes_the_rented_pod(lpod: LiumPod, fake: FakeLium, whole_group: bool):
    fake.rent_pending_polls = 10**6  # the pod never starts: lium up is waiting when Ctrl-C comes
    up_config(lpod, fake)
    pod, res = interrupted_up(lpod, fake, " created; waiting for it to become ready", whole_group)
    assert res.rc == 130, res.err
    assert res.last_err == removed_line(pod.id)
    assert f"wfops: pod.up interrupted; removing pod mypod (id {pod.id}) that it rented" in res.err
    assert fake.pods == {} and fake.count("DELETE", f"/pods/{pod.id}") == 1
    assert res.out == ""


def test_ctrl_c_when_removal_fails_names_the_pod_and_the_exact_command(lpod: LiumPod, fake: FakeLium):
    fake.rent_pending_polls = 10**6
    fake.fail[("DELETE", "/pods/")] = 500
    up_config(lpod, fake)
    pod, res = interrupted_up(lpod, fake, " created; waiting for it to become ready")
    assert res.rc == 130, res.err
    assert res.last_err.startswith(f"wfops: pod.up interrupted: pod mypod (id {pod.id}) is rented and billing, and "
                                   f"removing it failed (lium rm failed (exit 1): lium could not remove {pod.huid}); ")
    assert res.last_err.endswith(f"remove it now with `lium rm {pod.id} -y`")
    assert list(fake.pods) == [pod.id]
    fake.fail.clear()  # the API is back: the command the line names removes the pod
    command = shlex.split(re.search(r"`(lium rm [^`]+)`$", res.last_err).group(1))
    assert lpod.lium(*command[1:]).rc == 0
    assert fake.pods == {}


def test_ctrl_c_before_lium_names_the_pod_finds_the_new_pod_and_removes_it(lpod: LiumPod, fake: FakeLium):
    other = fake.add_pod("other")  # there before pod.up: never touched
    fake.slow[("POST", "/executors/")] = 60  # the rent is carried out, but its answer never comes back in time
    up_config(lpod, fake)
    with Running(lpod, "pod.up", "--yes") as run:
        run.wait_for("lium: renting ")
        deadline = time.monotonic() + scaled(30)
        while len(fake.pods) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        (pod,) = [p for p in fake.pods.values() if p.name == "mypod"]
        run.ctrl_c()
        res = run.finish()
    assert res.rc == 130, res.err
    assert res.last_err == removed_line(pod.id)
    assert list(fake.pods) == [other.id]


def test_ctrl_c_while_waiting_for_ssh_removes_the_rented_pod(lpod: LiumPod, fake: FakeLium):
    fake.ssh_port = free_port()  # the rented pod is RUNNING but its SSH never answers
    up_config(lpod, fake)
    pod, res = interrupted_up(lpod, fake, "wfops: waiting: ")
    assert res.rc == 130, res.err
    assert res.last_err == removed_line(pod.id)
    assert fake.pods == {}


def test_interrupted_up_reads_what_lium_said():
    created = "lium: renting brave-fox-00…\npod mypod (id: 4c1e-aa) created; waiting for it to become ready\n"
    stop = up_interrupted(created)
    assert (stop.pod_id, stop.pod_name, stop.renting) == ("4c1e-aa", "mypod", None)  # "lium: " is ours
    stop = up_interrupted("renting brave-fox-00…\nAborted!\n")
    assert (stop.pod_id, stop.renting) == (None, "brave-fox-00")
    envelope = json.dumps({"ok": False, "error": {"code": "x", "message": "m"}, "data": {"pod_id": "p-1"}})
    assert up_interrupted(f"renting n…\n{envelope}\n").pod_id == "p-1"
    assert up_interrupted("").renting is None


# ------------------------------------------------------------------ an API that answers 5xx/429 or too slowly

def fallback_config(lpod: LiumPod, **kw: str) -> None:
    lpod.configure(LIUM_TARGET="train", OPS_DEFAULT_HOST=lpod.sshd.address, SSH_KEY_PATH=str(lpod.sshd.key), **kw)


def timed(lpod: LiumPod, *args: str) -> tuple[Result, int, int, float]:
    started = time.monotonic()
    res, conns, execs = lpod.count(*args)
    return res, conns, execs, time.monotonic() - started


@pytest.mark.parametrize("status, reason", [(502, "Server error: 502"), (503, "Server error: 503"),
                                            (429, "Rate limit exceeded")])
def test_5xx_and_429_fall_back_to_ops_default_host_and_cost_once(lpod: LiumPod, fake: FakeLium, status, reason):
    fake.add_pod("train")
    fake.refuse_all = status
    fallback_config(lpod)
    res, conns, execs, first = timed(lpod, "fsm.status")
    assert res.rc == 0, res.err
    assert (conns, execs) == (1, 1)  # the pod was reached through OPS_DEFAULT_HOST
    assert res.err.splitlines()[0] == (
        f"wfops: lium ps: the Lium API at {fake.base_url} is unavailable ({reason}); "
        f"using OPS_DEFAULT_HOST={lpod.sshd.address} instead of LIUM_TARGET=train")
    assert lpod.gets() == 3  # lium's own three tries, once
    res, conns, execs, second = timed(lpod, "fsm.status")
    assert res.rc == 0, res.err
    assert (conns, execs) == (1, 1)
    assert lpod.gets() == 3  # remembered: no lium call at all
    assert re.fullmatch(
        rf"wfops: lium ps: the Lium API at {re.escape(fake.base_url)} is unavailable \({re.escape(reason)}\), "
        rf"\d+s ago \(wfops asks again in \d+s\); using OPS_DEFAULT_HOST={re.escape(lpod.sshd.address)} "
        "instead of LIUM_TARGET=train", res.err.splitlines()[0]), res.err
    print(f"\n{status}: first command {first:.2f}s, second {second:.2f}s")


def test_an_outage_without_ops_default_host_fails_fast_after_the_first_command(lpod: LiumPod, fake: FakeLium):
    fake.refuse_all = 503
    lpod.configure(LIUM_TARGET="train")
    res, conns, _, _ = timed(lpod, "fsm.status")
    assert res.rc == 11 and conns == 0
    assert one_line(res.err) == (f"wfops: lium ps: the Lium API at {fake.base_url} is unavailable (Server error: "
                                 "503); set OPS_DEFAULT_HOST to reach the pod without the Lium API")
    res, conns, _, _ = timed(lpod, "task.list")
    assert res.rc == 11 and conns == 0
    assert re.fullmatch(r"wfops: lium ps: the Lium API at \S+ is unavailable \(Server error: 503\), \d+s ago "
                        r"\(wfops asks again in \d+s\); set OPS_DEFAULT_HOST to reach the pod without the Lium API",
                        one_line(res.err))
    assert lpod.gets() == 3  # lium's three tries were paid by the first command only
    assert not lpod.state_file.exists()


def test_pod_status_asks_again_at_once_and_a_good_answer_ends_the_outage(lpod: LiumPod, fake: FakeLium):
    pod = fake.add_pod("train")
    lpod.pin(pod)
    fake.refuse_all = 503
    fallback_config(lpod)
    assert lpod.wf("fsm.status").rc == 0 and lpod.gets() == 3
    fake.refuse_all = None  # the API is back within the 30 s
    res = lpod.wf("pod.status", "--json")  # shows what Lium says now: never skips the lookup
    assert res.rc == 0, res.err
    assert res.json()["lium"]["id"] == pod.id and lpod.gets() == 4
    assert "OPS_DEFAULT_HOST" not in res.err
    res = lpod.wf("fsm.status", "--json")
    assert res.rc == 0 and "OPS_DEFAULT_HOST" not in res.err
    assert lpod.gets() == 4  # the lookup pod.status made is cached; the outage is forgotten
    assert res.json()["state"] == "POD_READY"


def test_a_remembered_outage_expires_after_30_seconds(lpod: LiumPod, fake: FakeLium):
    pod = fake.add_pod("train")
    lpod.pin(pod)
    fake.refuse_all = 502
    fallback_config(lpod)
    assert lpod.wf("fsm.status").rc == 0 and lpod.gets() == 3
    fake.refuse_all = None
    cache = json.loads(cache_file(lpod).read_text())
    (entry,) = cache["entries"].values()
    assert set(entry) == {"resolved_at", "down"}
    entry["resolved_at"] -= 31  # as if the failed lookup were 31 s old
    cache_file(lpod).write_text(json.dumps(cache))
    res = lpod.wf("fsm.status")
    assert res.rc == 0, res.err
    assert lpod.gets() == 4 and "OPS_DEFAULT_HOST" not in res.err
    entries = json.loads(cache_file(lpod).read_text())["entries"].values()
    assert [e.get("down") for e in entries] == [None]  # only the pod's entry is left


def test_a_slow_api_falls_back_after_the_lookup_timeout_and_costs_once(lpod: LiumPod, fake: FakeLium):
    fake.add_pod("train")
    fake.delay_secs = 60  # answers, but far too late
    # 5 s: lium itself must start and ask within it (a python CLI; slower on a machine busy with other tests)
    fallback_config(lpod, LIUM_LOOKUP_TIMEOUT_SECS="5")
    res, conns, _, first = timed(lpod, "fsm.status")
    assert res.rc == 0, res.err
    assert conns == 1
    assert res.err.splitlines()[0] == (
        f"wfops: lium ps did not finish within 5s (Lium API at {fake.base_url}); "
        f"using OPS_DEFAULT_HOST={lpod.sshd.address} instead of LIUM_TARGET=train")
    assert lpod.gets() == 1  # the message above is printed only when the lookup timeout fired
    res, conns, _, second = timed(lpod, "fsm.status")
    assert res.rc == 0 and conns == 1 and lpod.gets() == 1
    assert "s ago (wfops asks again in " in res.err.splitlines()[0]
    print(f"\nslow API: first command {first:.2f}s, second {second:.2f}s")


@pytest.mark.parametrize("value, line", [
    ("0", "wfops: config: LIUM_LOOKUP_TIMEOUT_SECS=0 is not valid: expected at least 1 second"),
    ("soon", "wfops: config: LIUM_LOOKUP_TIMEOUT_SECS='soon' is not valid (workflow.env line "),
])
def test_a_bad_lookup_timeout_is_one_line_exit_2(lpod: LiumPod, fake: FakeLium, value: str, line: str):
    lpod.configure(LIUM_TARGET="train", LIUM_LOOKUP_TIMEOUT_SECS=value)
    res = lpod.wf("fsm.status")
    assert res.rc == 2
    assert one_line(res.err).startswith(line.replace("workflow.env", lpod.config_path.name))
    assert fake.requests == []


def test_a_5xx_with_the_apis_own_error_code_is_still_an_outage():
    envelope = json.dumps({"ok": False, "error": {"code": "MAINTENANCE", "message": "Server error: 503",
                                                  "hint": "later", "exit_code": 3}})
    err = error_from("lium ps", 3, envelope + "\n", "https://lium.io/api")
    assert isinstance(err, LiumUnreachable)
    assert err.message == "lium ps: the Lium API at https://lium.io/api is unavailable (Server error: 503)"


# ------------------------------------------------------------------ LIUM_API_KEY in the config

SECRET = "cfg-secret-key-5f2a9c71"


def recording_lium(lpod: LiumPod, tmp_path: Path) -> Path:
    """A `lium` first on PATH that writes down its argv and runs the real one."""
    wrap = tmp_path / "wrapbin"
    wrap.mkdir()
    log = tmp_path / "lium-argv.log"
    script = wrap / "lium"
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {shlex.quote(str(log))}\n'
                      f'exec {shlex.quote(str(LIUM))} "$@"\n')
    script.chmod(0o755)
    lpod.env_extra["PATH"] = f"{wrap}{os.pathsep}{lpod.env()['PATH']}"
    return log


def test_lium_api_key_from_the_config_reaches_lium_and_shows_nowhere(lpod: LiumPod, fake: FakeLium, tmp_path):
    fake.api_key = SECRET  # the fake refuses any other key
    pod = fake.add_pod("train")
    lpod.pin(pod)
    argv_log = recording_lium(lpod, tmp_path)
    # nothing in the environment would do: LIUM_API_KEY is empty, and the LIUM_API_API_KEY lium prefers is stale
    lpod.env_extra.update(LIUM_API_KEY="", LIUM_API_API_KEY="stale-env-key-000")
    lpod.configure(LIUM_TARGET="train", LIUM_API_KEY=SECRET)
    mark = lpod.sshd.mark()
    res = lpod.wf("fsm.status")
    assert res.rc == 0, res.err
    assert fake.keys_seen and set(fake.keys_seen) == {SECRET}
    assert "LIUM_API_KEY" not in res.err  # a known key: no "unknown key ... passed to the pod" warning
    lpod.configure(LIUM_TARGET="", LIUM_EXECUTOR_ID=fake.executor_huid, LIUM_POD_NAME="fresh")
    up = lpod.wf("pod.up", "--yes", "--json", timeout=180)
    assert up.rc == 0, up.err
    assert len(fake.pods) == 2 and set(fake.keys_seen) == {SECRET}
    shown = lpod.wf("config.show")
    assert shown.rc == 0 and "LIUM_API_KEY" in shown.out
    for text in (res.out, res.err, up.out, up.err, shown.out, shown.err, argv_log.read_text(),
                 lpod.sshd.since(mark)):
        assert SECRET not in text
    assert "ps --format json" in argv_log.read_text() and "up " in argv_log.read_text()
    pod_files = [p for p in lpod.root.rglob("*") if p.is_file() and p != lpod.config_path]
    assert lpod.env_path in pod_files  # the pod's env file was written, without the key
    assert not [p for p in pod_files if SECRET in p.read_text(errors="replace")]


def test_without_a_key_in_the_config_lium_uses_its_own(lpod: LiumPod, fake: FakeLium):
    from tests.lium.conftest import API_KEY

    fake.api_key = API_KEY  # the one in the environment, as `lium init` users have it in ~/.lium
    pod = fake.add_pod("train")
    lpod.pin(pod)
    lpod.configure(LIUM_TARGET="train")
    assert lpod.wf("fsm.status").rc == 0
    lpod.configure(LIUM_API_KEY="wrong-key-in-config-000")  # the config's key wins over the environment
    cache_file(lpod).unlink()
    res = lpod.wf("fsm.status")
    assert res.rc == 11
    assert one_line(res.err).startswith("wfops: lium ps: Invalid API key (key ")
    assert "wrong-key-in-config-000" not in res.err


# ------------------------------------------------------------------ pod.up with a name already in use

def test_up_reuses_the_running_pod_of_that_name(lpod: LiumPod, fake: FakeLium):
    pod = fake.add_pod("mypod")
    lpod.pin(pod)
    up_config(lpod, fake)
    res = lpod.wf("pod.up", "--json")  # no --yes and no terminal: nothing is rented, nothing to confirm
    assert res.rc == 0, res.err
    assert res.err.splitlines()[0] == (f"wfops: pod.up: pod mypod ({pod.huid}, id {pod.id}) already has this name "
                                       "and is running; using it, nothing rented")
    assert res.err.count("pod.up") == 1
    data = res.json()
    assert data["reused"] is True and data["pod"]["id"] == pod.id
    assert data["config_line"] == f"LIUM_TARGET={pod.id}" and data["state"] == "POD_READY"
    assert posts(fake) == [] and list(fake.pods) == [pod.id]
    human = lpod.wf("pod.up")
    assert human.rc == 0 and human.out.startswith(f"reusing the running Lium pod mypod ({pod.huid}, id {pod.id}): ")
    assert posts(fake) == [] and list(fake.pods) == [pod.id]


@pytest.mark.parametrize("status, todo", [
    ("PENDING", "wait for it with pod.wait or remove it with pod.down"),
    ("FAILED", "remove it with pod.down"),
])
def test_up_refuses_a_name_held_by_a_pod_that_is_not_running(lpod: LiumPod, fake: FakeLium, status, todo):
    pod = fake.add_pod("mypod", status=status, pending_polls=99)
    up_config(lpod, fake)
    res = lpod.wf("pod.up", "--yes")
    assert res.rc == 10
    assert one_line(res.err) == (
        f"wfops: pod.up: pod mypod ({pod.huid}, id {pod.id}) already has the name mypod and is {status}, so wfops "
        f"rents none: {todo} (LIUM_TARGET={pod.id}), or set another LIUM_POD_NAME")
    assert posts(fake) == [] and list(fake.pods) == [pod.id]


def test_up_refuses_a_name_several_pods_share(lpod: LiumPod, fake: FakeLium):
    a = fake.add_pod("mypod")
    b = fake.add_pod("mypod")
    up_config(lpod, fake)
    res = lpod.wf("pod.up", "--yes")
    assert res.rc == 10
    assert one_line(res.err) == (
        f"wfops: pod.up: 2 pods already have the name mypod (mypod ({a.huid}, id {a.id}) RUNNING; mypod ({b.huid}, "
        f"id {b.id}) RUNNING), so wfops rents none: remove the extra ones with pod.down (LIUM_TARGET=<uuid>) or set "
        "another LIUM_POD_NAME")
    assert posts(fake) == [] and len(fake.pods) == 2

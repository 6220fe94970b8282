"""A local fleet for the tests: several loopback sshd "pods" (127.0.0.2, 127.0.0.3, ...), each with its own HOME,
so that `~/outputs` differs per pod and one config (OPS_HOSTS, `~`-relative remote paths) serves them all.

The servers are tests/realparts.py's (start_fleet); this module adds what a test needs on top: a config for the
fleet, copies of the session's checked-out pod in every home, a runner for `wfops`, and cleaning between tests.
Fixtures (tests/conftest.py): `fleet3` (session, 3 pods) and `fresh_fleet3` (the same fleet, every pod up and
every home empty at the start of the test, its leftovers ended at the end).
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests import forkrun
from tests.forkrun import WFOPS as WFOPS  # test_keeper_shared imports it from here
from tests.procview import keeper_pids
from tests.realparts import FleetPod, LocalFleet, copy_tree, descendants, kill_sshd, pids_with_env, running, start_fleet
from tests.slowness import scaled

POD_PYTHON = os.environ.get("WFOPS_TEST_POD_PYTHON", "/usr/bin/python3")
FAST_INSTALL = 'pip install -q --no-build-isolation --no-deps -e "$OPS_REMOTE_REPO[examples]"'

_config_counter = itertools.count()


@dataclass
class Fleet:
    """A running local fleet (tests/realparts.LocalFleet) with the tests' helpers."""

    local: LocalFleet
    keeper_dirs: set[Path] = field(default_factory=set)  # where this fleet's commands started warm keepers
    frozen: list[int] = field(default_factory=list)  # processes a partition stopped (thawed at the end)

    @classmethod
    def start(cls, root: Path, n: int) -> Fleet:
        return cls(start_fleet(root, n))

    @property
    def pods(self) -> list[FleetPod]:
        return self.local.pods

    @property
    def key(self) -> Path:
        return self.local.key

    @property
    def user(self) -> str:
        return self.pods[0].sshd.user

    def hosts_line(self) -> str:
        """The value of OPS_HOSTS: `user@127.0.0.2:PORT,user@127.0.0.3:PORT,...`."""
        return self.local.hosts_line()

    def kill(self, i: int, everything: bool = True) -> list[int]:
        """Pod `i` dies: its sshd, its connections and (with `everything`) every process with its HOME."""
        return self.local.kill(i, everything)

    def cut(self, i: int) -> list[int]:
        """Pod `i`'s sshd and every connection to it die (keepers' included); what it runs (its queue in tmux)
        goes on: the pod is alive but unreachable until `revive`."""
        pids = _sshd_tree(self.pods[i])
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.pods[i].sshd.proc.wait()
        return pids

    def freeze(self, i: int) -> list[int]:
        """A partition: pod `i`'s sshd and its session tree stop (SIGSTOP); its queue and runs go on."""
        pids = _sshd_tree(self.pods[i])
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        self.frozen += pids
        return pids

    def thaw(self) -> None:
        """The partition ends: every stopped process goes on."""
        for pid in self.frozen:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        self.frozen.clear()

    def revive(self, i: int) -> FleetPod:
        """Pod `i` comes back on the same address and port, with the same host key and home."""
        return self.local.revive(i)

    def stop(self) -> None:
        self.thaw()
        self.end_keepers()
        self.local.stop()

    def pids(self) -> list[int]:
        """Every process of the fleet: the sshd servers, their connections, whatever runs with a pod's HOME."""
        return self.local.pids()

    # -- between tests

    def end_keepers(self) -> list[int]:
        """End, by PID, every warm keeper this fleet's commands started (a keeper of a frozen or dead pod may not
        answer `wfops disconnect`): the processes whose command line is a keeper with a socket in those dirs."""
        ended = []
        for pid in keeper_pids(list(self.keeper_dirs)):
            try:
                os.kill(pid, signal.SIGKILL)
                ended.append(pid)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while any(running(p) for p in ended) and time.monotonic() < deadline:
            time.sleep(0.02)
        self.keeper_dirs.clear()
        return ended

    def end_leftovers(self) -> list[int]:
        """End what the pods still run (tmux servers, runs) and the warm keepers, but not their sshd servers or
        connections."""
        self.thaw()
        ended = self.end_keepers()
        for pod in self.pods:
            for pid in pids_with_env("HOME", str(pod.home)):
                try:
                    os.kill(pid, signal.SIGKILL)
                    ended.append(pid)
                except ProcessLookupError:
                    pass
        return ended

    def reset(self) -> None:
        """Every pod up, nothing of an earlier test left running, every home empty."""
        for pod in self.pods:
            if not pod.alive:
                kill_sshd(pod.sshd)  # whatever the dead pod left
                self.revive(pod.index)
        self.end_leftovers()
        for pod in self.pods:
            for entry in pod.home.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
            (pod.home / ".tmux").mkdir(mode=0o700)

    # -- what a pod needs

    def checked_out(self, template: Path) -> None:
        """Copy a prepared pod (the `checked_out` fixture's dir: repo, venv, data, outputs in state CHECKED_OUT)
        into every pod's home, so that `~/repo`, `~/outputs`, ... are a checked-out pod on each."""
        for pod in self.pods:
            copy_tree(template, pod.home)

    def base_config(self, tmp_path: Path) -> dict[str, str]:
        """Pod.base_config for a fleet: every remote path relative to the pod's home (`~/...`)."""
        n = next(_config_counter)
        tag = f"{os.getpid()}-{n}"
        return {
            "OPS_HOSTS": self.hosts_line(),
            "SSH_KEY_PATH": str(self.key),
            "SSH_STRICT_HOST_KEYS": "0",
            "OPS_REMOTE_OUTPUTS_DIR": "~/outputs",
            "REMOTE_ENV_PATH": "~/project.env",
            "OPS_REMOTE_REPO": "~/repo",
            "DATA_DIR": "~/data",
            "BOOTSTRAP_SCRIPT": "~/no-bootstrap.sh",
            "WF_TMUX_SOCKET": f"wfops-fleet-{tag}",
            "WF_TMUX_SESSION": f"f{tag}",
            "SWEEP_TMUX_SESSION": f"f{tag}-sw",
            "KILL_GRACE_SECS": "2",
            "LOCAL_ARTIFACTS_DIR": str(tmp_path / "artifacts"),
            "REMOTE_PYTHON_BIN": POD_PYTHON,
            "CPU_ONLY": "1",
            "TRAIN_NPROC": "",
            "REPO_INSTALL_CMD": FAST_INSTALL,
            "WF_FAKE_GPUS": "2",
            "TRAIN_LAUNCHER": "python",
        }

    def config(self, tmp_path: Path, *, pod: int | None = None, name: str = "fleet.env", **overrides: str) -> Path:
        """Write tmp_path/`name`, a dotenv for the whole fleet (OPS_HOSTS, no OPS_DEFAULT_HOST), or with `pod`
        for that pod alone (OPS_DEFAULT_HOST, no OPS_HOSTS). `overrides` win; an override of "" is written."""
        cfg = self.base_config(tmp_path)
        if pod is not None:
            del cfg["OPS_HOSTS"]
            cfg["OPS_DEFAULT_HOST"] = self.pods[pod].address
        cfg.update(overrides)
        path = tmp_path / name
        path.write_text("".join(f"{k}={_dotenv_quote(v)}\n" for k, v in cfg.items()))
        return path

    def wf(self, config: Path, *args: str, timeout: float = 120, env: dict[str, str] | None = None,
           ) -> subprocess.CompletedProcess:
        """Run `wfops ARGS` with `config`, a client HOME and keeper dir of its own next to the config."""
        home = config.parent / "client-home"
        home.mkdir(exist_ok=True)
        keepers = config.parent / "keepers"
        self.keeper_dirs.add(keepers)
        base = {k: v for k, v in os.environ.items() if not k.startswith(("WORKFLOW_", "LIUM_", "WF_", "TMUX"))}
        base.update(HOME=str(home), WORKFLOW_CONFIG=str(config), PYTHONUNBUFFERED="1", WFOPS_KEEPER_DIR=str(keepers))
        return forkrun.run([str(WFOPS), *args], env={**base, **(env or {})}, cwd=config.parent, timeout=scaled(timeout))


def _sshd_tree(pod: FleetPod) -> list[int]:
    """A pod's sshd and everything below it (its connections and the commands they run), not its tmux server."""
    assert pod.sshd.proc is not None
    return [pod.sshd.proc.pid, *descendants(pod.sshd.proc.pid)]


def _dotenv_quote(value: str) -> str:
    if value == "" or all(ch.isalnum() or ch in "/._-@:+,=" for ch in value):
        return value
    return "'" + value.replace("'", "\\'") + "'"


__all__ = ["Fleet", "FleetPod"]

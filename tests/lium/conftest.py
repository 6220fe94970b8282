"""Lium tests: the real `lium` CLI (the pinned `lium.io`) against a fake Lium API on loopback, with the
loopback sshd of tests/conftest.py playing the pod. Nothing here skips: without `lium` the tests fail
with what to install."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import Pod, Result, make_pod, stop_keepers
from tests.lium.fake_lium import FakeLium, FakePod
from tests.realparts import SSHD, start_sshd, stop_sshd

BIN = Path(sys.executable).parent
LIUM = BIN / "lium"
API_KEY = "test-api-key-0123456789"


@pytest.fixture(scope="session")
def lium_bin() -> Path:
    if not LIUM.exists():
        pytest.fail(f"the lium CLI is not installed in this venv ({LIUM}): pip install -e '.[lium]'", pytrace=False)
    return LIUM


@pytest.fixture
def fake(sshd: SSHD) -> Iterator[FakeLium]:
    api = FakeLium(ssh_host=sshd.host, ssh_port=sshd.port).start()
    yield api
    api.stop()


@pytest.fixture(scope="session")
def sshd2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHD]:
    """A second pod host (127.0.0.2, its own host key): where a pod 'was' before it moved."""
    server = start_sshd(tmp_path_factory.mktemp("sshd2"), host="127.0.0.2")
    yield server
    stop_sshd(server)


@dataclass
class LiumPod(Pod):
    """A Pod whose config targets a Lium pod (LIUM_TARGET) and whose `wfops` runs see the real lium CLI
    on PATH, talking to the fake API, with lium's files in the sandboxed HOME."""

    api: FakeLium | None = None
    lium_on_path: bool = True
    env_extra: dict[str, str] = field(default_factory=dict)

    def base_config(self) -> dict[str, str]:
        cfg = super().base_config()
        cfg.pop("SSH_KEY_PATH", None)
        cfg["OPS_DEFAULT_HOST"] = ""
        return cfg

    def env(self) -> dict[str, str]:
        env = super().env()
        assert self.api is not None
        path = [p for p in env.get("PATH", os.defpath).split(os.pathsep) if p and Path(p) != BIN]
        env.update(
            PATH=os.pathsep.join([str(BIN), *path] if self.lium_on_path else path),
            LIUM_BASE_URL=self.api.base_url,
            LIUM_API_KEY=API_KEY,
            LIUM_TELEMETRY="0",
            LIUM_SENTRY_DSN="",
            XDG_CACHE_HOME=str(self.home / ".cache"),
        )
        env.update(self.env_extra)
        return env

    # -- lium's files in the sandboxed HOME
    def lium_config(self, key: Path) -> None:
        """~/.lium/config.ini naming lium's SSH key, as `lium init` writes it."""
        d = self.home / ".lium"
        d.mkdir(exist_ok=True)
        (d / "config.ini").write_text(f"[ssh]\nkey_path = {key}\n")

    def pin_file(self, pod: FakePod) -> Path:
        return self.home / ".lium" / "known_hosts" / pod.id

    def pin(self, pod: FakePod, server: SSHD | None = None, host_key_pub: Path | None = None) -> Path:
        """Pin the host key of `server` (default: this pod's sshd) for `pod`, as lium does on first use."""
        server = server or self.sshd
        assert server is not None
        key = (host_key_pub or server.host_key_pub).read_text().split()
        path = self.pin_file(pod)
        path.parent.mkdir(parents=True, exist_ok=True)
        port = pod.ssh_port
        name = pod.ssh_host if port == 22 else f"[{pod.ssh_host}]:{port}"
        with path.open("a") as fh:
            fh.write(f"{name} {key[0]} {key[1]}\n")
        return path

    def lium(self, *args: str) -> Result:
        """Run the real lium CLI as the user would, with this pod's environment."""
        env = {**self.env(), "LIUM_SELF_UPDATE_DISABLE": "1", "LIUM_NONINTERACTIVE": "1", "LIUM_SSH_PERSIST": "0"}
        proc = subprocess.run([str(LIUM), *args], capture_output=True, text=True, env=env, timeout=60,
                              stdin=subprocess.DEVNULL)
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def gets(self) -> int:
        """How many times lium listed the pods (GET /pods) on the fake API."""
        assert self.api is not None
        return self.api.count("GET", "/pods")


@pytest.fixture
def lpod(tmp_path: Path, sshd: SSHD, tmux_socket: str, fake: FakeLium, lium_bin: Path) -> Iterator[LiumPod]:
    base = make_pod("ssh", tmp_path, sshd, tmux_socket)
    p = LiumPod(base.kind, base.root, base.home, base.sshd, base.tmux_socket, base.session, api=fake)
    p.lium_config(sshd.key)
    yield p
    stop_keepers(p.keeper_dir)  # warm connections are on (the default): the test's keepers end with it
    for session in (p.session, p.session + "-sw"):
        p.tmux("kill-session", "-t", f"={session}")

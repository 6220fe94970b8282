"""Host keys pinned for every target (issue 23, part 7): an SSH host's first key is pinned in wfops' own file
(never in ~/.ssh/known_hosts); after the host key changes, the next command, cold or through a warm keeper,
is refused with one line (both fingerprints, the command that accepts the new key) and nothing runs on the pod."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

from tests.conftest import make_pod, stop_keepers
from tests.integration.test_keeper import keepers, own_sshd, restart_sshd, warm_pod  # noqa: F401 - fixture
from tests.realparts import SSHD


def _fingerprint(pub) -> str:
    out = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(pub)], capture_output=True, text=True,
                         check=True).stdout
    return out.split()[1]


def test_the_first_key_is_pinned_and_a_changed_one_refused_cold_and_warm(tmp_path, own_sshd: SSHD,  # noqa: F811
                                                                         tmux_socket: str):
    (tmp_path / "p").mkdir()
    pod = make_pod("ssh", tmp_path / "p", own_sshd, tmux_socket)
    pins = Path(os.environ["XDG_STATE_HOME"]) / "wfops" / "known_hosts"  # each test's own (tests/conftest.py)
    name = f"[127.0.0.1]:{own_sshd.port}"
    try:
        old = _fingerprint(own_sshd.host_key_pub)
        warm_pod(pod)
        cold_cfg = tmp_path / "cold.env"  # the same pod, each command with its own connection
        cold_cfg.write_text(pod.config_path.read_text().replace("WF_PERSIST_SECS=120", "WF_PERSIST_SECS=0"))
        assert "WF_PERSIST_SECS=0\n" in cold_cfg.read_text()
        cold = {"WORKFLOW_CONFIG": str(cold_cfg)}
        pod.ok("fsm.status")  # the keeper connects: the first key is pinned
        assert keepers(pod) and pins.read_text().startswith(f"{name} ssh-ed25519 ")
        assert not (pod.home / ".ssh" / "known_hosts").exists()  # the user's file is never written
        pod.ok("fsm.status", env=cold)  # a cold command checks against the pin: the same key

        key = own_sshd.host_key_pub.with_suffix("")
        key.unlink()
        own_sshd.host_key_pub.unlink()
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        new = _fingerprint(own_sshd.host_key_pub)
        restart_sshd(own_sshd)  # the pod re-created: same address, another key

        for env in ({}, cold):  # through the warm keeper (it reconnects), then cold
            mark = own_sshd.mark()
            res = pod.wf("task.run", "--id", "t1", "--cmd", "true", env=env)
            assert res.rc == 4 and res.err.strip().splitlines() == [res.last_err], res.err
            assert res.last_err == (
                f"wfops: the host key of root@127.0.0.1:{own_sshd.port} changed: it is {new}, pinned {old} in {pins}; "
                f"refused, nothing ran. If the pod was re-created and you trust the new key: ssh-keygen -R '{name}' "
                f"-f {pins}")
            assert own_sshd.counts(mark) == (0, 0)  # never logged in: nothing ran
            assert not (pod.outputs / "_tasks" / "t1").exists()

        accept = re.search(r"ssh-keygen -R .*$", res.last_err).group(0)
        subprocess.run(shlex.split(accept), check=True, capture_output=True)
        pod.ok("task.list", env=cold)  # accepted: the new key is pinned at this connection
        assert f"{name} ssh-ed25519 " in pins.read_text()
        pod.ok("task.list")
    finally:
        stop_keepers(pod.keeper_dir)

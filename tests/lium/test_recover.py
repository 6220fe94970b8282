"""A managed sweep on a Lium pod (`sweep.wait --recover`), with the real lium CLI against the fake API: the pod is
lost mid-run (its sshd and every process of its HOME killed by PID, the fake reporting it FAILED), a pod like it is
rented (a new loopback sshd with an empty HOME, whose "volume" — OPS_REMOTE_OUTPUTS_DIR and DATA_DIR, absolute
paths — is the same directory), bootstrapped and checked out for real, and the lost run resumes there from its own
checkpoint. Ctrl-C, Lium refusing to rent, RECOVER_MAX and --down-when-done with a failing fetch on the way."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests import forkrun
from tests.conftest import FAST_INSTALL, WFOPS, TrainingRepo, stop_keepers, wait_until
from tests.lium.conftest import API_KEY, BIN
from tests.lium.fake_lium import FakeLium, FakePod
from tests.realparts import SSHD, copy_tree, kill_sshd, start_sshd, stop_sshd

if TYPE_CHECKING:
    from wfops.settings.load import Settings

CKPT_TRAIN = Path(__file__).resolve().parents[1] / "fixtures" / "ckpt_train.py"
HEADER = "run_id,config,seed,overrides,notes,gpus,nodes\n"


@dataclass
class Rig:
    """The fake Lium API, the user's pod `train` (127.0.0.7), the volume, a client HOME, and the pods rented."""

    root: Path
    api: FakeLium
    first: SSHD
    original: FakePod
    servers: list[SSHD] = field(default_factory=list)

    @property
    def volume(self) -> Path:
        return self.root / "volume"

    @property
    def config(self) -> Path:
        return self.root / "workflow.env"

    def env(self) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("WORKFLOW_", "LIUM_", "WF_", "TMUX"))}
        path = [p for p in base.get("PATH", os.defpath).split(os.pathsep) if p and Path(p) != BIN]
        base.update(HOME=str(self.root / "client"), WORKFLOW_CONFIG=str(self.config), PYTHONUNBUFFERED="1",
                    WFOPS_KEEPER_DIR=str(self.root / "keepers"), PATH=os.pathsep.join([str(BIN), *path]),
                    LIUM_BASE_URL=self.api.base_url, LIUM_API_KEY=API_KEY, LIUM_TELEMETRY="0", LIUM_SENTRY_DSN="",
                    XDG_CACHE_HOME=str(self.root / "client" / ".cache"))
        return base

    def wf(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return forkrun.run([str(WFOPS), *args], env=self.env(), cwd=self.root, timeout=timeout)

    def managed(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([str(WFOPS), "sweep.wait", "--recover", "--json", *args], env=self.env(),
                                cwd=self.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def rent_machine(self, pod: FakePod) -> None:
        """The fake's on_rent: the rented pod's machine, a new sshd with an empty HOME (the image has no repo)."""
        n = len(self.servers) + 1
        server = start_sshd(self.root / f"sshd{n}", host=f"127.0.0.{7 + n}", home=self.root / f"home{n}",
                            client_key=self.first.key)
        self.servers.append(server)
        pod.ssh_host, pod.ssh_port = server.host, server.port

    def lose(self, server: SSHD, pod_id: str, how: str = "FAILED") -> None:
        kill_sshd(server)
        with self.api.lock:
            if how == "gone":
                self.api.pods.pop(pod_id, None)
            else:
                self.api.pods[pod_id].status = how

    def log(self, rid: str) -> str:
        path = self.volume / "outputs" / rid / "stdout.log"
        return path.read_text() if path.exists() else ""


@pytest.fixture
def rig(tmp_path: Path, checked_out: Path, training_repo: TrainingRepo, pod_python: str,
        lium_bin: Path) -> Iterator[Rig]:
    home = tmp_path / "home0"
    copy_tree(checked_out, home)  # the user's pod: repo, venv (bootstrapped, checked out)
    (tmp_path / "volume").mkdir()
    for part in ("outputs", "data"):
        shutil.move(str(home / part), str(tmp_path / "volume" / part))
    first = start_sshd(tmp_path / "sshd0", host="127.0.0.7", home=home)
    api = FakeLium(ssh_host=first.host, ssh_port=first.port).start()
    original = api.add_pod("train", ssh_host=first.host, ssh_port=first.port)
    r = Rig(tmp_path, api, first, original)
    api.on_rent = r.rent_machine
    client = tmp_path / "client" / ".lium"
    client.mkdir(parents=True)
    (client / "config.ini").write_text(f"[ssh]\nkey_path = {first.key}\n")
    tag = f"{os.getpid() % 10000}"
    cfg = {"LIUM_TARGET": "train", "OPS_REMOTE_OUTPUTS_DIR": str(r.volume / "outputs"),
           "DATA_DIR": str(r.volume / "data"), "OPS_REMOTE_REPO": "~/repo", "REMOTE_ENV_PATH": "~/project.env",
           "BOOTSTRAP_SCRIPT": "~/no-bootstrap.sh", "REPO_URL": training_repo.url, "REMOTE_PYTHON_BIN": pod_python,
           "CPU_ONLY": "1", "REPO_INSTALL_CMD": FAST_INSTALL, "WF_FAKE_GPUS": "1", "TRAIN_LAUNCHER": "python",
           "TRAIN_SCRIPT": str(CKPT_TRAIN), "TRAIN_WORKDIR": "examples/nanogpt", "KILL_GRACE_SECS": "2",
           "WF_TMUX_SOCKET": f"wr{tag}", "SWEEP_TMUX_SESSION": f"r{tag}-sw",
           "LOCAL_ARTIFACTS_DIR": str(tmp_path / "artifacts"), "RECOVER_AFTER_SECS": "5", "LIUM_TTL": "1h",
           "LIUM_EXECUTOR_ID": str(api.executor["id"])}
    r.config.write_text("".join(f"{k}='{v}'\n" for k, v in cfg.items()))
    yield r
    stop_keepers(tmp_path / "keepers")  # the warm connections of the test's commands (keepers are on: defaults)
    for server in [first, *r.servers]:
        stop_sshd(server)
        if server.home is not None:
            kill_sshd(server)
    api.stop()


def _start(rig: Rig, rows: list[str]) -> None:
    csv = rig.root / "sweep.csv"
    csv.write_text(HEADER + "".join(r + "\n" for r in rows))
    res = rig.wf("sweep.start", "--csv", str(csv))
    assert res.returncode == 0, res.stderr


def _resumed(rig: Rig) -> int | None:
    """The step r1's current attempt resumed from (None: it has not resumed)."""
    found = re.search(r"resumed from step (\d+)", rig.log("r1"))
    return int(found.group(1)) if found else None


def _lines(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.startswith("wfops: ")]


def test_a_lium_pod_lost_mid_run_is_replaced_and_its_run_resumes_there(rig: Rig):
    _start(rig, ["r1,config/train_tiny.py,1,steps=120 every=5 step_secs=0.15,,1,",
                 "r2,config/train_tiny.py,2,steps=3 every=5 step_secs=0.1,,1,"])
    # Ctrl-C of the managed command: the pods stay, one line says how to go on
    wait_until(lambda: "step 2" in rig.log("r1"), timeout=60, what="r1 running")
    first = rig.managed()
    assert first.stderr is not None
    seen = first.stderr.readline()
    assert seen.startswith("wfops: managing sweep-"), seen
    first.send_signal(signal.SIGINT)
    _, err = first.communicate(timeout=60)
    assert first.returncode == 130, err
    assert "every pod stays as it is" in err and "`inv sweep.wait --recover`" in err.splitlines()[-1], err
    assert rig.original.id in rig.api.pods and not rig.servers
    # the pod is lost past r1's first checkpoint; Lium refuses once (no capacity), then rents
    wait_until(lambda: "step 7" in rig.log("r1"), timeout=60, what="r1 past its first checkpoint")
    rig.api.rent_refusals = [409]
    managed = rig.managed("--down-when-done")
    rig.lose(rig.first, rig.original.id)
    (rig.root / "artifacts").mkdir(exist_ok=True)
    (rig.root / "artifacts" / "r2").write_text("a file where run.fetch puts a folder: the fetch fails")
    wait_until(lambda: rig.servers and (rig.root / "home1" / "repo").is_dir() and _resumed(rig) is not None
               and f"step {_resumed(rig) + 7}" in rig.log("r1"), timeout=300, what="r1 resumed on the replacement")
    first_new = next(i for i in rig.api.pods if i != rig.original.id)
    rig.lose(rig.servers[0], first_new)  # lost twice: the replacement, rented by this sweep, is removed
    out, err = managed.communicate(timeout=400)
    lines = _lines(err)
    assert any(ln.startswith("wfops: removed lost pod ") and first_new in ln for ln in lines), err
    assert first_new not in rig.api.pods and any("(recovery 2/3)" in ln for ln in lines), err
    assert any(ln.startswith("wfops: restarted on train (id ") and "r1 (attempt 3)" in ln for ln in lines), err
    assert any(ln.startswith("wfops: lost pod train: Lium reports it FAILED (recovery 1/3)") for ln in lines), err
    assert any("Lium refused to rent a replacement" in ln and "trying again in 1s (1/4)" in ln for ln in lines), err
    assert any("was not rented by this sweep: left as it is" in ln for ln in lines), err
    new_id = next(i for i in rig.api.pods if i != rig.original.id)
    assert any(ln.startswith("wfops: rented pod ") and f"id {new_id}" in ln and "at $" in ln for ln in lines), err
    assert any(ln.startswith("wfops: restarted on train (id ") and "r1 (attempt 2)" in ln for ln in lines), err
    assert len(rig.servers) == 2
    assert {r["run_id"]: r["state"] for r in json.loads(out)["runs"]} == {"r1": "success", "r2": "success"}
    log = rig.log("r1")
    assert int(re.search(r"resumed from step (\d+)", log).group(1)) > 0, log  # type: ignore[union-attr]
    assert json.loads((rig.volume / "outputs" / "r1" / "final.json").read_text())["step"] == 120
    assert not (rig.root / "home1" / "repo").is_symlink() and (rig.root / "home1" / "repo" / ".git").is_dir()
    # --down-when-done: the fetch failed, so the rented pod stays and the last line says so (non-zero exit)
    assert managed.returncode != 0 and "the pods stay" in err.splitlines()[-1], err
    assert rig.original.id in rig.api.pods and new_id in rig.api.pods
    assert f"the pods stay ({new_id})" in err.splitlines()[-1], err
    status = rig.wf("sweep.status")
    assert status.returncode == 0, status.stderr
    assert (f"r1: attempt 1 on train, attempt 2 on train (id {first_new}), attempt 3 on train (id {new_id})"
            in status.stdout), status.stdout


def rent_settings(tmp_path: Path, sshd: SSHD, fake: FakeLium, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings of a one-pod Lium config, in this process, with the real `lium` CLI on PATH against the fake API
    (HOME, lium's config and key): for the tests that call the provider's rent directly."""
    from wfops.settings.load import load_settings

    (tmp_path / ".lium").mkdir()
    (tmp_path / ".lium" / "config.ini").write_text(f"[ssh]\nkey_path = {sshd.key}\n")
    for key, value in {"HOME": str(tmp_path), "LIUM_BASE_URL": fake.base_url, "LIUM_TELEMETRY": "0",
                       "LIUM_SENTRY_DSN": "", "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}.items():
        monkeypatch.setenv(key, value)
    cfg = tmp_path / "workflow.env"
    cfg.write_text(f"LIUM_TARGET=train\nLIUM_API_KEY={API_KEY}\nLIUM_EXECUTOR_ID={fake.executor['id']}\n"
                   "LIUM_TTL=1h\n")
    return load_settings(cfg)


def test_lium_refusing_every_rent_is_tried_with_back_off_then_one_error_says_so(
        tmp_path: Path, sshd: SSHD, fake: FakeLium, lium_bin: Path, monkeypatch: pytest.MonkeyPatch):
    from wfops.errors import LiumError
    from wfops.targets.providers import lium

    settings = rent_settings(tmp_path, sshd, fake, monkeypatch)
    fake.rent_refusals = [409] * 50  # no capacity, every time
    said: list[str] = []
    with pytest.raises(LiumError) as refused:
        lium.rent_replacement(lium.cli("sweep.wait --recover", settings), settings, 1.0, said.append)
    assert [ln.split("trying again in ")[1] for ln in said] == ["1s (1/4)", "2s (2/4)", "4s (3/4)"], said
    assert refused.value.message.startswith(f"Lium refused to rent a replacement {lium.RENT_TRIES} times"), \
        refused.value.message
    assert not fake.pods  # nothing was rented, nothing bills

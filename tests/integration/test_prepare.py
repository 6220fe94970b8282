"""bootstrap and checkout against real git, a real venv over a real torch, on the sshd and local targets."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import zipfile

import pytest

from tests.conftest import Pod, TrainingRepo, checkout_config, git, write_shards


def head(pod: Pod) -> str:
    return git("rev-parse", "HEAD", cwd=pod.root / "repo")


def state_bytes(pod: Pod) -> bytes:
    return pod.state_file.read_bytes() if pod.state_file.exists() else b""


def _ready(pod: Pod, training_repo: TrainingRepo, pod_python: str) -> Pod:
    checkout_config(pod, training_repo, pod_python)
    write_shards(pod.root / "data")
    return pod


@pytest.fixture
def ready(pod: Pod, training_repo: TrainingRepo, pod_python: str) -> Pod:
    """On both targets: for the behaviours where SSH and `local` could differ."""
    return _ready(pod, training_repo, pod_python)


@pytest.fixture
def ssh_ready(ssh_pod: Pod, training_repo: TrainingRepo, pod_python: str) -> Pod:
    return _ready(ssh_pod, training_repo, pod_python)


@pytest.fixture
def local_ready(local_pod: Pod, training_repo: TrainingRepo, pod_python: str) -> Pod:
    return _ready(local_pod, training_repo, pod_python)


def test_checkout_branch_then_a_second_run_changes_nothing(ready: Pod, training_repo: TrainingRepo):
    pod = ready
    first = pod.ok("checkout")
    assert "CHECKED_OUT" in first.out
    assert head(pod) == training_repo.main_sha
    assert pod.state()["state"] == "CHECKED_OUT"
    venv = pod.root / "repo" / ".venv"
    assert "include-system-site-packages = true" in (venv / "pyvenv.cfg").read_text()
    link = pod.root / "repo" / "examples" / "nanogpt" / "data" / "fineweb10B" / "fineweb_train_000001.bin"
    assert link.is_symlink() and link.resolve() == (pod.root / "data" / "fineweb_train_000001.bin").resolve()
    marker = venv / ".wfops-installed"
    before = (venv.stat().st_ino, (venv / "pyvenv.cfg").stat().st_mtime_ns, marker.stat().st_mtime_ns)

    second = pod.ok("checkout")
    for said in ("skip   clone     already cloned", "skip   venv      keep", "skip   install   dependencies up to date",
                 "[install] dependencies up to date; nothing to install", "[checkout] already at"):
        assert said in second.err, said
    assert "venv          unchanged" in second.out and "dependencies  unchanged" in second.out
    assert (venv.stat().st_ino, (venv / "pyvenv.cfg").stat().st_mtime_ns, marker.stat().st_mtime_ns) == before


def test_dry_run_prints_the_plan_and_changes_nothing(ready: Pod):
    pod = ready
    pod.ok("fsm.reset", "POD_READY")
    state = state_bytes(pod)
    res = pod.ok("checkout", "--dry-run")
    assert "dry run: nothing was changed)" in res.out  # the agent was installed by fsm.reset already
    assert "do     clone" in res.out and "do     venv      create" in res.out
    assert not (pod.root / "repo").exists()
    assert state_bytes(pod) == state


def test_a_first_dry_run_says_exactly_what_it_did(ready: Pod):
    """On a pod wfops never touched, a dry run installs only its own agent, says where, and takes no lock."""
    pod = ready
    control = pod.outputs / "_control"
    assert not control.exists()
    res = pod.ok("checkout", "--dry-run")
    agents = list((control / "agent").iterdir())
    assert len(agents) == 1 and f"dry run: nothing was changed but wfops' own pod agent, installed in {agents[0]})" \
        in res.out
    assert sorted(p.name for p in control.iterdir()) == ["agent"]  # no lock file, no state file
    assert not (pod.root / "repo").exists() and not pod.env_path.exists()


def test_a_first_dry_run_that_fails_or_prints_json_still_says_it_installed_the_agent(local_pod: Pod,
                                                                                      training_repo: TrainingRepo,
                                                                                      pod_python: str):
    """A dry run that fails after installing the pod agent (here: no data) said only its error, and `--json` and
    `--help` said nothing of it ('change nothing'), although the agent was installed on a fresh pod."""
    pod = local_pod
    checkout_config(pod, training_repo, pod_python)
    res = pod.wf("checkout", "--dry-run")
    agent = next((pod.outputs / "_control" / "agent").iterdir())
    lines = res.err.strip().splitlines()
    assert res.rc == 6 and lines[-2:] == [
        f"dry run: nothing was changed but wfops' own pod agent, installed in {agent}",
        f"wfops: no FineWeb shard pair in DATA_DIR={pod.root / 'data'} (found 0 train, 0 val); put "
        "fineweb_train_*.bin and fineweb_val_*.bin there, or set DOWNLOAD_FINEWEB=1"], res.err
    again = pod.wf("checkout", "--dry-run")  # the agent is there now: nothing installed, nothing said of it
    assert again.rc == 6 and "pod agent" not in again.err, again.err
    shutil.rmtree(pod.outputs / "_control")
    write_shards(pod.root / "data")
    shown = json.loads(pod.ok("checkout", "--dry-run", "--json").out)
    assert shown["installed"] == [str(next((pod.outputs / "_control" / "agent").iterdir()))]
    assert json.loads(pod.ok("checkout", "--dry-run", "--json").out)["installed"] == []
    helped = pod.ok("checkout", "--help").out
    assert "install wfops' own pod agent" in " ".join(helped.split()), helped


def test_checkout_a_pull_request_and_a_branch(ssh_ready: Pod, training_repo: TrainingRepo):
    pod = ssh_ready
    pod.configure(CHECKOUT_PR=str(training_repo.pr))
    pod.ok("checkout")
    assert head(pod) == training_repo.pr_sha
    pod.configure(CHECKOUT_PR="", CHECKOUT_BRANCH="feature", EXPECT_GIT_SHA=training_repo.feature_sha[:10])
    pod.ok("checkout")
    assert head(pod) == training_repo.feature_sha


def test_wrong_sha_missing_branch_missing_pr_fail_and_keep_the_state(local_ready: Pod, training_repo: TrainingRepo):
    pod = local_ready
    pod.ok("bootstrap")
    for overrides, message in (
        ({"EXPECT_GIT_SHA": "deadbeef"}, f"HEAD is {training_repo.main_sha}, not EXPECT_GIT_SHA=deadbeef"),
        ({"CHECKOUT_BRANCH": "not-pushed"}, "branch not-pushed is not on origin"),
        ({"CHECKOUT_PR": "99"}, "pull request #99 was not found on origin"),
    ):
        pod.configure(**{"EXPECT_GIT_SHA": "", "CHECKOUT_BRANCH": "main", "CHECKOUT_PR": "", **overrides})
        res = pod.wf("checkout")
        assert res.rc == 6, res.err
        assert message in res.last_err
        if "not-pushed" in message:
            assert res.last_err.endswith("did you push it?")
        assert pod.state()["state"] == "BOOTSTRAPPED"


def test_tracked_modifications_refused_unless_force_clean(ssh_ready: Pod):
    pod = ssh_ready
    pod.ok("checkout")
    train = pod.root / "repo" / "examples" / "nanogpt" / "train.py"
    train.write_text(train.read_text() + "\n# local edit\n")
    state = state_bytes(pod)
    res = pod.wf("checkout")
    assert res.rc == 6
    assert res.last_err == (f"wfops: tracked modifications in {pod.root / 'repo'}: examples/nanogpt/train.py; "
                            "commit or stash them on the pod, or set CHECKOUT_FORCE_CLEAN=1 to discard them")
    assert train.read_text().endswith("# local edit\n") and state_bytes(pod) == state
    pod.configure(CHECKOUT_FORCE_CLEAN="1")
    pod.ok("checkout")
    assert "# local edit" not in train.read_text()


def test_missing_repo_url_is_a_config_error_before_connecting(ssh_pod: Pod, training_repo, pod_python):
    checkout_config(ssh_pod, training_repo, pod_python, REPO_URL="")
    res, conns, _ = ssh_pod.count("checkout")
    assert res.rc == 2 and conns == 0
    assert res.last_err == "wfops: config: REPO_URL is empty; checkout needs the git URL of your training repo"


def test_cuda_required_by_default_and_the_state_stays(ready: Pod):
    pod = ready
    pod.configure(CPU_ONLY="0")
    pod.ok("fsm.reset", "BOOTSTRAPPED")
    state = state_bytes(pod)
    res = pod.wf("checkout")
    assert res.rc == 6
    assert "torch.cuda.is_available() is False on this pod (torch 2.13.0" in res.last_err
    assert res.last_err.endswith("or set CPU_ONLY=1 if this target has no GPU on purpose")
    assert state_bytes(pod) == state and not (pod.root / "repo").exists()


def test_python_without_torch_has_its_own_message(ready: Pod, tmp_path, pod_python):
    pod = ready
    bare_venv = tmp_path / "no-torch"
    subprocess.run([pod_python, "-m", "venv", "--without-pip", str(bare_venv)], check=True)
    pod.configure(REMOTE_PYTHON_BIN=str(bare_venv / "bin" / "python"))
    res = pod.wf("checkout")
    assert res.rc == 6
    assert "torch does not import with REMOTE_PYTHON_BIN=" in res.last_err
    assert "ModuleNotFoundError" in res.last_err and "is itself a virtualenv" in res.last_err
    assert not (pod.root / "repo").exists()


def _fake_torch_wheel(directory) -> str:
    """A wheel named torch 99.0: what pip would pull in if a repo asked for a newer torch."""
    name = "torch-99.0-py3-none-any.whl"
    files = {"torch/__init__.py": b"__version__ = '99.0'\n",
             "torch-99.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: torch\nVersion: 99.0\n",
             "torch-99.0.dist-info/WHEEL":
                 b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(
        f"{p},sha256={base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b'=').decode()},{len(d)}\n"
        for p, d in files.items()) + "torch-99.0.dist-info/RECORD,,\n"
    path = directory / name
    with zipfile.ZipFile(path, "w") as zf:
        for p, d in files.items():
            zf.writestr(p, d)
        zf.writestr("torch-99.0.dist-info/RECORD", record)
    return str(path)


def test_pip_pulling_torch_into_the_venv_is_refused(local_ready: Pod, tmp_path):
    pod = local_ready
    wheel = _fake_torch_wheel(tmp_path)
    # PIP_CONFIG_FILE=/dev/null: this machine caps torch versions in its pip config
    pod.configure(REPO_INSTALL_CMD=f"PIP_CONFIG_FILE=/dev/null pip install -q --no-index --no-deps {wheel}")
    res = pod.wf("checkout")
    assert res.rc == 6
    assert "installing the dependencies put a torch inside" in res.last_err
    assert not (pod.root / "repo" / ".venv" / ".wfops-installed").exists()
    pod.configure(REPO_INSTALL_CMD="true")  # the fix: no torch in the dependencies; the venv gets rebuilt
    res = pod.ok("checkout")
    assert "recreate: torch resolves inside the venv" in res.err


def test_data_missing_without_download(ready: Pod):
    pod = ready
    pod.configure(DATA_DIR=str(pod.root / "empty-data"))
    pod.ok("fsm.reset", "POD_READY")
    res = pod.wf("checkout")
    assert res.rc == 6
    assert res.last_err == (f"wfops: no FineWeb shard pair in DATA_DIR={pod.root / 'empty-data'} "
                            "(found 0 train, 0 val); "
                            "put fineweb_train_*.bin and fineweb_val_*.bin there, or set DOWNLOAD_FINEWEB=1")
    assert pod.state()["state"] == "POD_READY"


def test_download_with_the_repos_downloader(ssh_ready: Pod):
    pod = ssh_ready
    data = pod.root / "fresh-data"
    pod.configure(DATA_DIR=str(data), DOWNLOAD_FINEWEB="1")
    res = pod.ok("checkout")
    assert sorted(p.name for p in data.iterdir()) == ["fineweb_train_000001.bin", "fineweb_val_000000.bin"]
    assert "staged" not in res.err
    linked = pod.root / "repo" / "examples" / "nanogpt" / "data" / "fineweb10B" / "fineweb_val_000000.bin"
    assert linked.is_symlink() and linked.resolve() == (data / "fineweb_val_000000.bin").resolve()


def test_download_onto_s3fs_is_staged_on_local_disk(local_ready: Pod, tmp_path):
    pod = local_ready
    data = pod.root / "mnt" / "data"
    data.parent.mkdir()  # the (fake) s3fs mount point exists, as a real one would
    mounts = tmp_path / "mounts"
    mounts.write_text(f"/dev/vda / ext4 rw 0 0\ns3fs {pod.root / 'mnt'} fuse.s3fs rw,nosuid 0 0\n")
    pod.configure(DATA_DIR=str(data), DOWNLOAD_FINEWEB="1", WF_MOUNT_TABLE=str(mounts))
    res = pod.ok("checkout")
    assert "staged on local disk, then copied into" in res.err
    assert "DATA_DIR is on s3fs: downloading into" in res.err
    assert sorted(p.name for p in data.iterdir()) == ["fineweb_train_000001.bin", "fineweb_val_000000.bin"]
    stage = res.err.split("downloading into ", 1)[1].split(" on local disk")[0]
    assert not os.path.exists(stage)


def test_bootstrap_reports_missing_prerequisites_and_changes_nothing(pod: Pod):
    pod.configure(PREREQ_COMMANDS="git tmux no-such-tool-xyz")
    pod.ok("fsm.reset", "POD_READY")
    state = state_bytes(pod)
    res = pod.wf("bootstrap")
    assert res.rc == 6
    assert res.last_err == ("wfops: missing on the pod: no-such-tool-xyz ; set AUTO_INSTALL_PREREQS=1 to apt-get "
                            "install APT_PACKAGES, or install them")
    assert state_bytes(pod) == state


def test_bootstrap_script_failure_only_warns_and_wandb_key_is_never_shown(pod: Pod):
    script = pod.root / "bootstrap-pod.sh"
    script.write_text("echo bootstrap ran\nexit 5\n")
    wandb = pod.root / "set-wandb.sh"
    wandb.write_text('echo "machine api.wandb.ai password $WANDB_API_KEY" > /dev/null; echo "key is $WANDB_API_KEY"\n')
    pod.configure(BOOTSTRAP_SCRIPT=str(script), WANDB_SETUP_SCRIPT=str(wandb), SWEEP_WANDB="1",
                  WANDB_API_KEY="wb-0123456789abcdef")
    res = pod.ok("bootstrap")
    assert "bootstrap ran" in res.err
    assert f"warning: {script} failed (exit 5); continuing" in res.err
    assert "wb-0123456789abcdef" not in res.out + res.err
    log = pod.outputs / "_control" / "wandb-setup.log"
    assert "key is wb-0123456789abcdef" in log.read_text() and oct(log.stat().st_mode & 0o777) == "0o600"
    assert pod.state()["state"] == "BOOTSTRAPPED"


@pytest.mark.apt
def test_bootstrap_installs_a_missing_prerequisite_with_apt(ssh_pod: Pod):
    """Installs Debian's tiny `hello` package on this machine (the pod) with apt-get."""
    subprocess.run(["apt-get", "remove", "-y", "-q", "hello"], capture_output=True)
    assert subprocess.run(["sh", "-c", "command -v hello"], capture_output=True).returncode != 0
    ssh_pod.configure(PREREQ_COMMANDS="git tmux hello", AUTO_INSTALL_PREREQS="1", APT_PACKAGES="hello")
    res = ssh_pod.ok("bootstrap", timeout=600)
    assert "[prereqs] missing: hello" in res.err and "installed; all present now" in res.err
    assert "(installed: hello)" in res.out
    assert subprocess.run(["hello"], capture_output=True, text=True).stdout.strip() == "Hello, world!"

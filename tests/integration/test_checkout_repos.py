"""checkout meets real repos (issue 12): data that is not FineWeb (DATA_CHECK, DATA_LINK), links and .venv kept
out of `git status`, probe-time refusals that change nothing (a branch missing on origin, a venv python without
torch), a REMOTE_PYTHON_BIN inside a venv whose packages the checkout's venv sees, empty optional keys."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.conftest import Pod, TrainingRepo, checkout_config, git, write_shards


def untouched(pod: Pod) -> None:
    assert not (pod.root / "repo").exists()
    assert not pod.state_file.exists() or pod.state()["state"] in ("INIT", "POD_READY")


def make_venv(where: Path, base: str, system_site: bool) -> Path:
    subprocess.run([base, "-m", "venv", "--without-pip", *(["--system-site-packages"] if system_site else []),
                    str(where)], check=True)
    return where / "bin" / "python"


def test_a_branch_missing_on_origin_is_refused_by_the_probe(pod: Pod, training_repo: TrainingRepo, pod_python: str,
                                                            tmp_path: Path):
    origin = tmp_path / "origin.git"  # a copy whose HEAD names its default branch, as on GitHub
    shutil.copytree(training_repo.bare, origin)
    git("symbolic-ref", "HEAD", "refs/heads/main", cwd=origin)
    checkout_config(pod, training_repo, pod_python, CHECKOUT_BRANCH="master", REPO_URL=f"file://{origin}")
    res = pod.wf("checkout")
    assert res.rc == 6
    assert res.last_err == (f"wfops: branch master is not on origin (file://{origin}); origin's default branch "
                            "is main: set CHECKOUT_BRANCH=main, or did you push it?")
    untouched(pod)


def test_a_venv_python_without_torch_is_refused_before_anything_changes(local_pod: Pod, training_repo: TrainingRepo,
                                                                        pod_python: str, tmp_path: Path):
    bare = make_venv(tmp_path / "bare-env", pod_python, system_site=False)
    checkout_config(local_pod, training_repo, str(bare))
    write_shards(local_pod.root / "data")
    res = local_pod.wf("checkout")
    assert res.rc == 6 and "torch does not import with REMOTE_PYTHON_BIN" in res.last_err
    assert "is itself a virtualenv" in res.last_err
    untouched(local_pod)


def test_a_venv_python_works_and_its_packages_are_seen(local_pod: Pod, training_repo: TrainingRepo, pod_python: str,
                                                       tmp_path: Path):
    pod = local_pod
    env_python = make_venv(tmp_path / "research-env", pod_python, system_site=True)  # torch from the image
    site = subprocess.run([str(env_python), "-c", "import site; print(site.getsitepackages()[0])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "only_in_research_env.py").write_text("WHERE = 'research-env'\n")
    checkout_config(pod, training_repo, str(env_python), REPO_INSTALL_CMD="", BOOTSTRAP_SCRIPT="")
    write_shards(pod.root / "data")
    boot = pod.ok("bootstrap")
    assert "BOOTSTRAP_SCRIPT is empty: none to run" in boot.err
    res = pod.ok("checkout")
    assert "REPO_INSTALL_CMD is empty: nothing to install" in res.err
    venv_python = pod.root / "repo" / ".venv" / "bin" / "python"
    seen = subprocess.run([str(venv_python), "-c", "import only_in_research_env as m, torch; print(m.WHERE)"],
                          capture_output=True, text=True)
    assert seen.returncode == 0 and seen.stdout.strip() == "research-env", seen.stderr
    assert "keep: " in pod.ok("checkout").err  # a second checkout keeps that venv


def test_data_check_and_link_modes_and_a_clean_git_status(ssh_pod: Pod, training_repo: TrainingRepo,
                                                          pod_python: str):
    pod = ssh_pod
    data = pod.root / "tiny"
    data.mkdir()
    checkout_config(pod, training_repo, pod_python, DATA_DIR=str(data), DATA_CHECK="train.bin val.bin",
                    DATA_LINK="dir", DATA_LINK_DIR="data/tiny")
    missing = pod.wf("checkout")
    assert missing.rc == 6 and missing.last_err == (
        f"wfops: nothing in DATA_DIR={data} matches train.bin val.bin (DATA_CHECK); put the data there, set "
        "DATA_CHECK to what your data looks like (empty: no check), or DOWNLOAD_FINEWEB=1")
    untouched(pod)
    for name in ("train.bin", "val.bin", "meta.pkl"):
        (data / name).write_bytes(b"\0" * 64)
    pod.ok("checkout")
    work = pod.root / "repo" / "examples" / "nanogpt"
    link = work / "data" / "tiny"
    assert link.is_symlink() and link.resolve() == data.resolve()
    assert git("status", "--porcelain", "--untracked-files=all", cwd=pod.root / "repo") == ""
    # the same data, linked file by file (what DATA_CHECK matched), then not at all
    pod.configure(DATA_LINK="shards", DATA_LINK_DIR="data/files", DATA_CHECK="*.bin")
    pod.ok("checkout")
    files = work / "data" / "files"
    assert sorted(p.name for p in files.iterdir()) == ["train.bin", "val.bin"]
    assert all(p.is_symlink() and p.resolve().parent == data.resolve() for p in files.iterdir())
    assert git("status", "--porcelain", "--untracked-files=all", cwd=pod.root / "repo") == ""
    pod.configure(DATA_LINK="none", DATA_LINK_DIR="data/nowhere", DATA_CHECK="")
    res = pod.ok("checkout")
    assert "DATA_CHECK is empty" in res.err and "DATA_LINK=none" in res.err
    assert not (work / "data" / "nowhere").exists()


def test_a_train_workdir_outside_the_checkout_is_refused_before_anything(local_pod: Pod, training_repo: TrainingRepo,
                                                                         pod_python: str):
    """TRAIN_WORKDIR=../../outside passed, and checkout (exit 0) made folders and links outside the checkout
    (OPS_REMOTE_REPO/../../outside/data/fineweb10B); DATA_LINK_DIR with `..` was already refused."""
    checkout_config(local_pod, training_repo, pod_python, TRAIN_WORKDIR="../../outside")
    write_shards(local_pod.root / "data")
    res = local_pod.wf("checkout", timeout=300)
    assert res.rc == 2 and len(res.err.strip().splitlines()) == 1, (res.rc, res.err)
    assert res.err.startswith("wfops: config: TRAIN_WORKDIR='../../outside' is not valid ("), res.err
    assert res.err.strip().endswith("expected a path inside the checkout, relative to OPS_REMOTE_REPO (no leading "
                                    "'/', no '..' part), on one line"), res.err
    assert not (local_pod.root / "repo" / ".." / ".." / "outside").resolve().exists()
    untouched(local_pod)


def test_keys_for_any_repo_in_the_config():
    from wfops.errors import ConfigError
    from wfops.settings.load import parse_settings

    s = parse_settings("OPS_REMOTE_REPO=/r\nTRAIN_WORKDIR=.\nBOOTSTRAP_SCRIPT=\nWANDB_SETUP_SCRIPT=\n", environ={})
    assert s.run_out_local_root == "/r/./out" and s.bootstrap_script == ""
    assert parse_settings("", environ={}).run_out_local_root == "~/repo/examples/nanogpt/out"
    for bad in ("DATA_CHECK=../etc/*", "DATA_LINK=copy", "METRIC_PATTERNS=no groups", "METRIC_PATTERNS=(?P<x"):
        try:
            parse_settings(bad + "\n", environ={})
        except ConfigError as exc:
            assert bad.split("=")[0] in str(exc)
        else:
            raise AssertionError(f"{bad} was accepted")

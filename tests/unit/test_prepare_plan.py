"""checkout's pure planner, from probe facts as data (no pod): what it does, skips and refuses."""

from __future__ import annotations

import copy

import pytest

from wfops.errors import ConfigError, RemoteError
from wfops.preparation import plan_checkout
from wfops.settings.load import parse_settings

FACTS = {
    "repo": {"path": "/r", "exists": True, "is_git": True, "empty": False, "head": "a" * 40, "branch": "main",
             "origin": "https://example.invalid/x.git", "dirty": [], "deps_hash": "h1"},
    "venv": {"path": "/r/.venv", "exists": True, "python_ok": True, "system_site": True, "home": "/usr/bin",
             "home_real": "/usr/bin", "torch_inside": [], "installed_hash": "h1"},
    "python": {"found": True, "importable": True, "torch_version": "2.13.0", "torch_file": "/usr/lib/torch/__init__.py",
               "cuda": True, "cuda_devices": 8, "exe_dir": "/usr/bin", "is_venv": False},
    "gpus": ["GPU 0: H100"],
    "data": {"dir": "/d", "exists": True, "train": ["fineweb_train_000001.bin"], "val": ["fineweb_val_000000.bin"],
             "mount_point": "/", "fs_type": "ext4"},
    "link": {"dir": "/r/w/data", "linked": ["fineweb_train_000001.bin", "fineweb_val_000000.bin"]},
}


def settings(**kv: str):
    base = {"REPO_URL": "https://example.invalid/x.git", **kv}
    return parse_settings("".join(f"{k}={v}\n" for k, v in base.items()), environ={})


def facts(**changes):
    out = copy.deepcopy(FACTS)
    for path, value in changes.items():
        section, key = path.split("__")
        out[section][key] = value
    return out


def actions(plan) -> dict[str, str]:
    return {s.name: s.action for s in plan.steps}


def test_nothing_to_do_on_a_prepared_pod():
    plan = plan_checkout(settings(), facts())
    assert actions(plan) == {"clone": "skip", "fetch": "do", "clean": "skip", "checkout": "do", "verify": "skip",
                             "venv": "skip", "torch": "check", "install": "skip", "data": "skip", "link": "skip"}
    assert plan.venv == "keep" and plan.data == "present"


def test_a_fresh_pod_needs_everything():
    plan = plan_checkout(settings(DOWNLOAD_FINEWEB="1"), facts(
        repo__exists=False, repo__is_git=False, venv__exists=False, data__train=[], data__val=[], link__linked=[]))
    assert actions(plan)["clone"] == "do" and plan.venv == "create" and plan.data == "download"
    assert actions(plan)["install"] == "do" and actions(plan)["link"] == "do"


@pytest.mark.parametrize("changes,reason", [
    ({"venv__torch_inside": ["/r/.venv/lib/python3.11/site-packages/torch"]}, "torch resolves inside the venv"),
    ({"venv__system_site": False}, "lacks --system-site-packages"),
    ({"venv__home_real": "/opt/conda/bin"}, "made from another python"),
])
def test_venv_is_recreated_when_it_cannot_be_trusted(changes, reason):
    plan = plan_checkout(settings(), facts(**changes))
    assert plan.venv == "recreate"
    assert reason in next(s.detail for s in plan.steps if s.name == "venv")


def test_venv_recreate_switch_and_changed_dependencies():
    assert plan_checkout(settings(VENV_RECREATE="1"), facts()).venv == "recreate"
    assert actions(plan_checkout(settings(), facts(venv__installed_hash="old")))["install"] == "do"


@pytest.mark.parametrize("changes,message", [
    ({"python__found": False, "python__error": "python3 not found"}, "REMOTE_PYTHON_BIN=python3: python3 not found"),
    ({"python__importable": False, "python__error": "ModuleNotFoundError: No module named 'torch'"},
     "torch does not import with REMOTE_PYTHON_BIN=python3 (ModuleNotFoundError"),
    ({"python__torch_version": "2.1.2"}, "torch 2.1.2 at /usr/lib/torch/__init__.py is older than 2.3"),
    ({"python__cuda": False}, "torch.cuda.is_available() is False on this pod"),
    ({"repo__dirty": ["a.py", "b.py"]}, "tracked modifications in /r: a.py, b.py"),
    ({"repo__origin": "https://example.invalid/other.git"}, "/r is a checkout of https://example.invalid/other.git"),
    ({"repo__is_git": False}, "OPS_REMOTE_REPO=/r exists and is not a git checkout"),
    ({"data__train": []}, "no FineWeb shard pair in DATA_DIR="),
])
def test_what_the_probe_shows_to_be_wrong_is_refused_before_any_change(changes, message):
    with pytest.raises(RemoteError) as err:
        plan_checkout(settings(), facts(**changes))
    assert message in err.value.message


def test_cpu_only_is_an_explicit_switch():
    plan = plan_checkout(settings(CPU_ONLY="1"), facts(python__cuda=False))
    assert "no CUDA (CPU_ONLY=1" in next(s.detail for s in plan.steps if s.name == "torch")


def test_a_venv_as_remote_python_is_explained():
    with pytest.raises(RemoteError, match="is itself a virtualenv"):
        plan_checkout(settings(), facts(python__importable=False, python__error="ModuleNotFoundError",
                                        python__is_venv=True, python__python="/v/bin/python"))


def test_dirty_tree_with_force_clean_and_s3fs_staging():
    plan = plan_checkout(settings(CHECKOUT_FORCE_CLEAN="1", DOWNLOAD_FINEWEB="1"),
                         facts(repo__dirty=["a.py"], data__train=[], data__fs_type="fuse.s3fs"))
    assert plan.force_clean and plan.data == "download_staged"


def test_config_problems():
    with pytest.raises(ConfigError, match="REPO_URL is empty"):
        plan_checkout(parse_settings("", environ={}), facts())
    with pytest.raises(ConfigError, match="CHECKOUT_BRANCH='a b' is not a valid branch name"):
        plan_checkout(settings(CHECKOUT_BRANCH="'a b'"), facts())


def test_pr_wins_over_branch_and_sha_is_checked():
    plan = plan_checkout(settings(CHECKOUT_PR="12", EXPECT_GIT_SHA="ABCDEF1"), facts())
    assert (plan.ref_kind, plan.ref, plan.expect_sha) == ("pr", "12", "abcdef1")
    assert actions(plan)["verify"] == "check"

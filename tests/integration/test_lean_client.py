"""The lean client: a warm command imports neither paramiko nor Fabric (nor Jinja, once its script is cached),
and Python's bytecode cache works for wfops under `inv` from a checkout."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import BIN, ROOT, Pod


def imported(res) -> set[str]:
    """Top-level packages a command imported, from Python's -X importtime report (PYTHONPROFILEIMPORTTIME). A
    package hidden from an import (wfops.transport.sshconf.paramiko hides invoke from paramiko) is listed there
    too, as a bare name that took a few microseconds: not counted."""
    found = re.finditer(r"^import time:\s+(\d+) \|\s+(\d+) \|\s+(\S+)", res.err, re.M)
    return {m.group(3).split(".")[0] for m in found if "." in m.group(3) or int(m.group(2)) >= 50}


def test_a_warm_command_imports_no_ssh_library_and_no_jinja(ssh_pod: Pod):
    ssh_pod.configure(WF_PERSIST_SECS="60")
    profile = {"PYTHONPROFILEIMPORTTIME": "1"}
    first = ssh_pod.ok("task.list", env=profile)  # starts the keeper, renders and caches the script
    assert "jinja2" in imported(first)
    warm = ssh_pod.ok("task.list", env=profile)
    assert warm.out == first.out
    assert {"paramiko", "fabric", "jinja2"} & imported(warm) == set()
    ssh_pod.configure(WF_PERSIST_SECS="0")  # the positive control: a command's own connection needs paramiko
    own = ssh_pod.ok("task.list", env=profile)
    assert "paramiko" in imported(own) and {"fabric", "invoke", "jinja2"} & imported(own) == set()


def test_inv_keeps_the_bytecode_cache_of_a_checkout(tmp_path: Path):
    checkout = tmp_path / "checkout"
    shutil.copytree(ROOT / "wfops", checkout / "wfops", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "remote_templates", checkout / "remote_templates")
    shutil.copy(ROOT / "tasks.py", checkout / "tasks.py")
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    res = subprocess.run([str(BIN / "inv"), "--list"], cwd=checkout, capture_output=True, text=True, env=env)
    assert res.returncode == 0 and "sweep.status" in res.stdout, res.stderr
    tag = sys.implementation.cache_tag
    cached = {p.name for p in (checkout / "wfops" / "tasks" / "__pycache__").glob(f"*.{tag}.pyc")}
    assert {f"sweep.{tag}.pyc", f"run.{tag}.pyc", f"_base.{tag}.pyc"} <= cached
    assert not (checkout / "__pycache__").exists()  # invoke's choice for the user's own tasks.py stands
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # and the user's own choice is kept
    shutil.rmtree(checkout / "wfops" / "tasks" / "__pycache__")
    subprocess.run([str(BIN / "inv"), "--list"], cwd=checkout, capture_output=True, text=True, env=env, check=True)
    assert not (checkout / "wfops" / "tasks" / "__pycache__").exists()

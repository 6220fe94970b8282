"""Packaging and composition: the public task tree (snapshot), importing the collection into another
project's tasks.py, and a built wheel that finds its templates."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import BIN, ROOT, Pod

SNAPSHOT = ROOT / "tests" / "snapshots" / "task_tree.json"


def inv(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "inv"), *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


def test_public_task_tree_snapshot():
    """A renamed task or namespace breaks other people's tasks.py: it must show up here first.
    After a deliberate change: UPDATE_SNAPSHOTS=1 pytest tests/integration/test_packaging.py"""
    res = inv("--list", "--list-format", "json", cwd=ROOT)
    assert res.returncode == 0, res.stderr
    tree = json.loads(res.stdout)
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.write_text(json.dumps(tree, indent=1, sort_keys=True) + "\n")
    assert tree == json.loads(SNAPSHOT.read_text())
    console = subprocess.run([str(BIN / "wfops"), "--list", "--list-format", "json"], capture_output=True, text=True)
    assert json.loads(console.stdout)["collections"] == tree["collections"]
    assert json.loads(console.stdout)["tasks"] == tree["tasks"]


def test_another_project_composes_the_collection(local_pod: Pod, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "tasks.py").write_text(
        "from invoke import Collection, task\n"
        "from wfops.tasks import ns as wfops\n"
        "from wfops.tasks.sweep import ns as sweep\n\n"
        "@task\n"
        "def hello(c):\n"
        "    print('hello from the project')\n\n"
        "ns = Collection(hello)\n"
        "ns.add_collection(wfops, 'wf')\n"
        "ns.add_collection(sweep)\n"
        "ns.configure({'wfops': {'config': 'ops/pod.env'}})\n"
    )
    (project / "ops").mkdir()
    local_pod.write_config()
    (project / "ops" / "pod.env").write_text(local_pod.config_path.read_text() + "WANDB_PROJECT=composed\n")
    env = {k: v for k, v in local_pod.env().items() if k != "WORKFLOW_CONFIG"}
    env["PATH"] = os.environ["PATH"]
    listed = inv("--list", cwd=project, env=env)
    assert listed.returncode == 0, listed.stderr
    for name in ("hello", "wf.task.run", "wf.checkout", "wf.sweep.start", "sweep.status", "sweep.template"):
        assert f"  {name} " in listed.stdout or f"  {name}\n" in listed.stdout, name
    shown = subprocess.run([str(BIN / "inv"), "wf.config.show", "--json"], cwd=project, capture_output=True,
                           text=True, env={k: v for k, v in env.items()})
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["values"]["WANDB_PROJECT"] == "composed"
    ran = inv("wf.task.run", "--id", "composed", "--cmd", "echo composed", cwd=project, env=env)
    assert ran.returncode == 0, ran.stderr
    waited = inv("wf.task.wait", "--id", "composed", cwd=project, env=env)
    assert waited.returncode == 0, waited.stderr
    template = inv("sweep.template", "--csv", "s.csv", cwd=project, env=env)
    assert template.returncode == 0 and (project / "s.csv").is_file()


def test_built_wheel_carries_and_finds_its_templates(local_pod: Pod, tmp_path):
    dist = tmp_path / "dist"
    build = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist),
                            str(ROOT)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-3000:]
    wheel = next(dist.glob("wfops-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {Path(n).name for n in names if n.startswith("wfops/remote_templates/")}
    assert shipped == {p.name for p in (ROOT / "remote_templates").iterdir() if p.is_file()}
    assert "wfops/py.typed" in names  # PEP 561: a project that imports wfops type-checks against its hints
    assert "wfops_quiet_pipe.pth" in names  # `inv --help | head` is quiet (wfops/quietpipe.py)
    site = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site),
                              str(wheel)], capture_output=True, text=True)
    assert install.returncode == 0, install.stderr
    env = {**local_pod.env(), "PYTHONPATH": str(site)}
    where = subprocess.run([sys.executable, "-c", "import wfops, wfops.transport.render as r; print(wfops.__file__); "
                            "print(r.templates_dir())"], capture_output=True, text=True, env=env, cwd=tmp_path)
    module, templates = where.stdout.split()
    assert module.startswith(str(site)) and templates == str(site / "wfops" / "remote_templates")
    local_pod.write_config()
    run = subprocess.run([sys.executable, "-m", "wfops", "task.run", "--id", "from-wheel", "--cmd", "echo wheel"],
                         capture_output=True, text=True, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    wait = subprocess.run([sys.executable, "-m", "wfops", "task.wait", "--id", "from-wheel", "--json"],
                          capture_output=True, text=True, env=env, cwd=tmp_path)
    assert wait.returncode == 0 and json.loads(wait.stdout)["state"] == "success"

"""run.fetch --all on a fleet with no ledger, a run that ran on two pods, and the copy that wins changing between
two fetches (issue 23: "fetch takes one copy"): the folders swap — the new winner's copy in RUN/, the old one's in
_duplicates/<pod>/RUN/ — instead of piling up (before: RUN.replaced-<time>/ beside a stale duplicate)."""

from __future__ import annotations

from pathlib import Path

from tests.fleet import Fleet
from tests.integration.test_fleet import _csv
from wfops.sweeps.fleet_fetch import pod_dir_name


def _gen(run_dir: Path) -> str:
    return (run_dir / ".wfops-generation").read_text().strip()


def _copies(artifacts: Path) -> dict[str, str]:
    """Every local folder of run r (relative to the artifacts dir) -> the generation it holds."""
    return {str(p.parent.relative_to(artifacts)): p.read_text().strip()
            for p in sorted(artifacts.rglob(".wfops-generation")) if p.parent.name.startswith("r")}


def test_fetching_again_after_the_winning_copy_changed_leaves_one_copy_per_pod(tmp_path: Path, fleet_ready: Fleet):
    fleet = fleet_ready
    script = {"TRAIN_SCRIPT": "echo_train.py", "TRAIN_WORKDIR": "examples/nanogpt", "WF_FAKE_GPUS": "1"}
    one = [fleet.config(tmp_path, pod=i, name=f"pod{i}.env", **script) for i in (0, 1)]
    whole = fleet.config(tmp_path, **script)  # the fleet, with no ledger: each pod's own sweep says what it ran
    rows = ["r,config/train_tiny.py,1,exit=3,,1,", f"r,config/train_tiny.py,1,fail_once={tmp_path / 'once'},,1,"]
    for i in (0, 1):  # the same run on two pods (as after a partition), both failed
        assert fleet.wf(one[i], "sweep.start", "--csv", str(_csv(tmp_path, [rows[i]], f"s{i}.csv"))).returncode == 0
        assert fleet.wf(one[i], "sweep.wait", timeout=120).returncode == 1
    art = tmp_path / "artifacts"
    a, b = (fleet.pods[i].home / "outputs" / "r" for i in (0, 1))
    apart_a, apart_b = (f"_duplicates/{pod_dir_name(fleet.pods[i].address)}/r" for i in (0, 1))
    first = fleet.wf(whole, "run.fetch", "--all", timeout=120)
    assert first.returncode == 0, (first.stdout, first.stderr)
    assert _copies(art) == {"r": _gen(a), apart_b: _gen(b)}  # both failed: the first pod's copy wins
    assert fleet.wf(one[1], "sweep.retry", "r").returncode == 0  # the second pod's copy runs again and succeeds
    assert fleet.wf(one[1], "sweep.wait", timeout=120).returncode == 0
    second = fleet.wf(whole, "run.fetch", "--all", timeout=120)
    assert second.returncode == 0, (second.stdout, second.stderr)
    assert _copies(art) == {"r": _gen(b), apart_a: _gen(a)}, _copies(art)  # swapped: one copy per pod, no r.replaced
    assert (art / "r" / "ended.json").is_file()  # the winner's files, fetched on in its folder
    assert f"wfops: r: the copy from {fleet.pods[1].address} is the one run.fetch takes now" in second.stderr, \
        second.stderr
    third = fleet.wf(whole, "run.fetch", "--all", timeout=120)
    assert third.returncode == 0 and "takes now" not in third.stderr, (third.stdout, third.stderr)
    assert _copies(art) == {"r": _gen(b), apart_a: _gen(a)}

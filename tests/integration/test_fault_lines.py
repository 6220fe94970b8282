"""Faults found from outside (issue 23) that printed a pod traceback: each is now one line with its exit code,
and the pod is left as it was (or the command fully done)."""

from __future__ import annotations

from tests.conftest import Pod
from tests.integration.test_faults import fill, small_disk  # noqa: F401 - fixture
from tests.integration.test_sweeps import status, swept, wait_sweep, write_csv  # noqa: F401 - fixture


def _snapshot(pod: Pod) -> dict[str, bytes]:
    """Every file of the pod's sweep records and the state file, with its bytes."""
    files = [*sorted((pod.outputs / "_manifests").iterdir()), pod.outputs / "_control" / "sweep.json", pod.state_file]
    return {str(p): p.read_bytes() for p in files if p.is_file()}


def test_sweep_start_on_a_full_disk_is_one_line_and_all_or_nothing(small_disk: Pod):  # noqa: F811
    pod = small_disk
    pod.ok("sweep.start", "--csv", str(write_csv(pod, "first,config/train_tiny.py,1,,\n", name="first.csv")))
    wait_sweep(pod)  # an earlier sweep: the files a new start replaces (sweep-latest.*, sweep.json) exist
    csv = write_csv(pod, "second,config/train_tiny.py,2,,\n")
    spacers = pod.outputs / "spacers"
    spacers.mkdir()
    refused = 0
    for free_pages in (0, 1, 2, 3, 5, 8):  # the disk fills at a different file of the start each time
        for i in range(free_pages):
            (spacers / str(i)).write_bytes(b"s" * 4096)
        fill(pod.outputs)
        for p in spacers.iterdir():
            p.unlink()
        before = _snapshot(pod)
        res = pod.wf("sweep.start", "--csv", str(csv))
        (pod.outputs / "ballast.bin").unlink()
        if res.rc == 0:  # it fitted: a whole sweep
            assert "started sweep-" in res.out
            assert [r["run_id"] for r in wait_sweep(pod)["runs"]] == ["second"]
            break
        refused += 1
        assert "Traceback" not in res.err and res.err.strip().splitlines() == [res.last_err], res.err
        assert res.rc == 6 and res.last_err.startswith("wfops: the disk is full: cannot write the files of sweep-")
        assert res.last_err.endswith("; it was not started")
        assert _snapshot(pod) == before  # every file as it was, nothing half-written left
        assert status(pod)["runs"][0]["run_id"] == "first"
    assert refused >= 1


def test_a_damaged_manifest_of_the_wrong_shape_is_one_line_everywhere(swept: Pod):  # noqa: F811
    pod = swept
    pod.ok("sweep.start", "--csv", str(write_csv(pod, "a,config/train_tiny.py,1,,\n")))
    wait_sweep(pod)
    latest = pod.outputs / "_manifests" / "sweep-latest.json"
    for damaged in ('{"runs":5}', '{"runs":[5]}', '{"runs":[{"run_id":"a"}],"exec":3}', '[]'):
        latest.write_text(damaged)
        res = pod.wf("run.fetch", "--all")
        assert res.rc == 6 and res.err.strip().splitlines() == [res.last_err], res.err
        assert f"{latest} is damaged (" in res.last_err
        for args in (("sweep.status",), ("sweep.report",), ("run.logs", "a"), ("sweep.list",)):
            res = pod.wf(*args)
            assert "Traceback" not in res.err and "Error" not in res.err, (damaged, args, res.err)
            assert res.rc in (0, 5, 6), (damaged, args, res.rc, res.err)
    assert latest.read_text() == "[]"  # read-only commands never replace it

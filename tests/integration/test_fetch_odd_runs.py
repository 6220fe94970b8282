"""run.fetch of runs with odd contents: a file with two names (a hard link), names that are not UTF-8, names with
control characters, mtimes before 1970, a local run folder that is a link. What the user sees: the files here, the
exit code, one clear line."""

from __future__ import annotations

import os

from tests.conftest import Pod
from tests.integration.test_fetch_incremental import artifacts, summary, write


def test_a_file_with_two_names_arrives_under_both_as_a_full_file(ssh_pod: Pod):
    """`os.link(ckpt, best)`: tar would send the second name as a link member; it goes as a regular file."""
    pod = ssh_pod
    pod.ok("fsm.reset", "CHECKED_OUT")
    run, local = pod.outputs / "r1", artifacts(pod) / "r1"
    write(run / "metrics.json", b"{}")
    write(run / "ckpt" / "step_1000.pt", b"weights")
    os.link(run / "ckpt" / "step_1000.pt", run / "best.pt")
    res = pod.ok("run.fetch", "r1")
    assert summary(res)[:2] == (3, 0)
    assert (local / "best.pt").read_bytes() == (local / "ckpt" / "step_1000.pt").read_bytes() == b"weights"
    assert (local / "best.pt").stat().st_nlink == 1 and (local / "ckpt" / "step_1000.pt").stat().st_nlink == 1
    assert summary(pod.ok("run.fetch", "r1")) == (0, 3, 0)

"""run.fetch of runs with odd contents: a file with two names (a hard link), names that are not UTF-8, names with
control characters, mtimes before 1970, a local run folder that is a link; a fetch of a replaced run that stops
midway. What the user sees: the files here, the
exit code, one clear line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.conftest import WFOPS, Pod, wait_until
from tests.integration.test_fetch_incremental import artifacts, manifest, summary, write
from wfops.agent.states import GENERATION_FILE


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


def _utf8_locale(where: Path) -> dict[str, str]:
    """The environment of a UTF-8 locale other than C.UTF-8 (under which Python's stdout escapes what is not
    UTF-8; under en_US.UTF-8 it refuses it): en_US.UTF-8 built into `where`, or, where localedef cannot build it,
    the stdout a UTF-8 locale gives Python (PYTHONIOENCODING=utf-8:strict)."""
    plain = {"PYTHONUTF8": "0"}
    try:
        made = subprocess.run(["localedef", "-i", "en_US", "-f", "UTF-8", str(where / "en_US.UTF-8")],
                              capture_output=True, timeout=60).returncode in (0, 1)  # 1: made, with warnings
    except (OSError, subprocess.TimeoutExpired):
        made = False
    if made and (where / "en_US.UTF-8").is_dir():
        return {**plain, "LOCPATH": str(where), "LANG": "en_US.UTF-8", "LC_ALL": "en_US.UTF-8"}
    return {**plain, "LC_ALL": "C.UTF-8", "PYTHONIOENCODING": "utf-8:strict"}


def test_a_file_name_that_is_not_utf8_arrives_as_its_bytes_under_a_utf8_locale(local_pod: Pod, tmp_path: Path):
    """The pod agent lists the files to send; a name that is not UTF-8 goes out as its bytes, not a traceback."""
    pod = local_pod
    env = _utf8_locale(tmp_path)
    probe = subprocess.run([sys.executable, "-c", "import sys; print(sys.stdout.errors)"], env={**os.environ, **env},
                           capture_output=True, text=True)
    assert probe.stdout.strip() == "strict"  # what the agent's stdout would do with the name, unfixed
    pod.ok("fsm.reset", "CHECKED_OUT", env=env)
    run, local = pod.outputs / "r1", artifacts(pod) / "r1"
    write(run / "ok.txt", b"ok")
    with open(os.fsencode(run) + b"/caf\xe9.bin", "wb") as fh:
        fh.write(b"latin-1 name")
    res = pod.ok("run.fetch", "r1", env=env)
    assert summary(res)[:2] == (2, 0) and "Traceback" not in res.err
    assert sorted(os.listdir(os.fsencode(local))) == [b"caf\xe9.bin", b"ok.txt"]
    with open(os.fsencode(local) + b"/caf\xe9.bin", "rb") as fh:
        assert fh.read() == b"latin-1 name"
    assert summary(pod.ok("run.fetch", "r1", env=env)) == (0, 2, 0)


def test_a_gone_file_whose_name_holds_control_characters_is_named_visibly(ssh_pod: Pod):
    """'kept here: NAME': the name comes from the pod; an escape sequence or a line break in it is shown, not sent
    to the terminal (a fake summary line, a retitled window)."""
    pod = ssh_pod
    name = "evil\x1b]0;owned\x07\x1b[2K\rwfops: fetched 1 run(s): all good\nx.txt"
    pod.ok("fsm.reset", "CHECKED_OUT")
    write(pod.outputs / "r1" / "a.txt", b"a")
    write(pod.outputs / "r1" / name, b"x")
    pod.ok("run.fetch", "r1")
    (pod.outputs / "r1" / name).unlink()
    res = pod.ok("run.fetch", "r1")
    assert not any(c in res.err for c in "\x1b\x07\r")
    gone = [ln for ln in res.err.splitlines() if "no longer on the pod" in ln]
    assert gone == ["wfops: 1 file(s) fetched earlier are no longer on the pod; kept here: r1/evil\\x1b]0;owned\\x07"
                    "\\x1b[2K\\x0dwfops: fetched 1 run(s): all good\\x0ax.txt"]
    assert (artifacts(pod) / "r1" / name).read_bytes() == b"x"


def test_files_from_before_1970_and_with_fractions_of_a_second_are_sent_once(ssh_pod: Pod):
    """tar keeps whole seconds rounded down (-1.5: -2); the pod compares the same: nothing is sent again."""
    pod = ssh_pod
    pod.ok("fsm.reset", "CHECKED_OUT")
    run, local = pod.outputs / "r1", artifacts(pod) / "r1"
    write(run / "neg.txt", b"negative", mtime=-1.5)
    write(run / "frac.txt", b"fraction", mtime=1_700_000_000.999)
    write(run / "future.txt", b"future", mtime=2 ** 33 + 0.5)
    assert summary(pod.ok("run.fetch", "r1"))[:2] == (3, 0)
    assert (local / "neg.txt").stat().st_mtime == -2 and (local / "frac.txt").stat().st_mtime == 1_700_000_000
    assert summary(pod.ok("run.fetch", "r1")) == (0, 3, 0)


def test_a_fetch_of_a_replaced_run_stopped_by_ctrl_c_says_where_the_old_copy_went(ssh_pod: Pod):
    """The old copy moves aside before anything of the new run lands; Ctrl-C after that still says where it is."""
    pod = ssh_pod
    pod.ok("fsm.reset", "CHECKED_OUT")
    run, local = pod.outputs / "r1", artifacts(pod) / "r1"
    write(run / GENERATION_FILE, b"sweep-a 2026-12-01T00:00:00Z")
    write(run / "old.txt", b"old run")
    pod.ok("run.fetch", "r1")
    (run / "old.txt").unlink()
    write(run / GENERATION_FILE, b"sweep-b 2026-12-02T00:00:00Z")
    with open(run / "big.bin", "wb") as fh:  # sparse: seconds on the wire, no disk on the pod's side
        fh.truncate(1 << 30)
    proc = subprocess.Popen([str(WFOPS), "run.fetch", "r1"], env=pod.env(), cwd=pod.root.parent,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_until(lambda: [p for p in artifacts(pod).iterdir() if p.name.startswith("r1.replaced-")], timeout=60,
                   interval=0.005, what="the old copy moved aside")
        os.killpg(proc.pid, signal.SIGINT)
    finally:
        _, err = proc.communicate(timeout=60)
    [aside] = [p for p in artifacts(pod).iterdir() if p.name.startswith("r1.replaced-")]
    assert proc.returncode == 130 and (aside / "old.txt").read_bytes() == b"old run"
    assert (f"wfops: r1 was replaced on the pod since it was fetched (a rerun): the old local copy is now {aside}; "
            "the fetch into a fresh r1/ stopped before it was complete (fetch again for the rest)") in err.splitlines()
    assert not (local / "big.bin").exists() and sorted(p.name for p in artifacts(pod).iterdir()) == ["r1", aside.name]


def _tree(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every entry under `root` (links not followed): (inode, size, mtime in ns)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            out[os.path.relpath(os.path.join(dirpath, name), root)] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return out


def test_a_local_run_folder_that_is_a_link_is_refused_by_a_named_fetch_and_by_all(ssh_pod: Pod, tmp_path: Path):
    """A run folder here that is a link (to a folder inside the artifacts dir or elsewhere) is never written through:
    `run.fetch RUN_ID` refuses it up front (exit 2, nothing changed here or there); `--all` where its first file
    would land (exit 6, one line naming it). A link that is none of the sweep's runs (`latest -> r3`) stops nothing,
    and a run folder that is a folder is fetched as ever."""
    pod = ssh_pod
    pod.ok("fsm.reset", "CHECKED_OUT")
    for rid in ("r1", "r2", "r3"):
        write(pod.outputs / rid / "a.txt", rid.encode())
    manifest(pod, "sweep-latest", ["r1", "r2", "r3"])
    pod.ok("run.fetch", "--all")
    pod.ok("run.fetch", "--all")  # a repeated fetch through the warm keeper: its cached fast path is kept too
    here = artifacts(pod)
    (here / "latest").symlink_to("r3")
    write(pod.outputs / "r3" / "b.txt", b"new on the pod")
    assert summary(pod.ok("run.fetch", "--all"))[:2] == (1, 3)  # `latest` is no run of the sweep: left alone
    (here / "archive").mkdir()
    (here / "r1").rename(here / "archive" / "r1")
    (here / "r1").symlink_to("archive/r1")  # inside the artifacts dir
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (here / "r2").rename(elsewhere / "r2")
    (here / "r2").symlink_to(elsewhere / "r2")
    for rid in ("r1", "r2"):
        write(pod.outputs / rid / "b.txt", b"new on the pod")
    before = (_tree(here), _tree(elsewhere), _tree(pod.outputs))
    link_words = ("(to a folder): run.fetch does not write through links; replace the link with the folder itself "
                  "(mv), or move it out of LOCAL_ARTIFACTS_DIR")
    for rid in ("r1", "r2"):
        res = pod.wf("run.fetch", rid)
        assert res.rc == 2 and res.out == "", res
        assert res.err.splitlines() == [f"wfops: run folder {here / rid} is a symbolic link {link_words}; nothing "
                                        "was fetched"]
        assert (_tree(here), _tree(elsewhere), _tree(pod.outputs)) == before
    res = pod.wf("run.fetch", "--all")
    assert res.rc == 6 and res.out == "", res
    assert res.err.splitlines()[-1] == (f"wfops: run folder {here / 'r1'} is a symbolic link {link_words}; the files "
                                        "of this fetch before it are in place")
    assert (_tree(here), _tree(elsewhere), _tree(pod.outputs)) == before  # r1 comes first: nothing of it written
    assert not [p for p in here.iterdir() if p.name.startswith(".incoming-")]
    write(pod.outputs / "r3" / "c.txt", b"new on the pod")
    assert summary(pod.ok("run.fetch", "r3"))[:2] == (1, 2)  # a run folder that is a folder: as ever

"""The cached fast path of a repeated run.fetch (wfops.leanfetch): with nothing new on the pod it asks for the pod's
plan alone (answered by the pod's kept agent: no exec) and says exactly what the lean path says; anything to copy,
a replaced run, a file changed or removed here, or the pod's refusal is the lean path's work again, with nothing
said twice. Real loopback sshd, keeper and kept agent."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import Pod, Result, wait_until
from tests.integration.test_lean_cache import PROFILE, hit, said
from tests.integration.test_lean_entry import fetch_summary, finished_sweep

NO_CACHE = {"WFOPS_LEAN_CACHE": "0"}


def told(res: Result) -> tuple[int, str, str]:
    """What a fetch said, without the seconds of its summary line (they differ between two fetches)."""
    rc, out, err = said(res)
    return rc, out, fetch_summary(err)


def fetch(pod: Pod, *args: str) -> Result:
    return pod.wf("run.fetch", *args, env=PROFILE)


def warm_fetch_pod(pod: Pod, runs: int = 3) -> None:
    """A finished sweep fetched once (a copy: the lean path) and again (nothing to copy: the lean path, since the
    one before copied something); the next `run.fetch --all` may take the cached fast path."""
    pod.configure(WF_PERSIST_SECS="120")
    pod.ok("fsm.reset", "CHECKED_OUT", "--reason", "cached fetch")
    finished_sweep(pod, runs)
    first, second = fetch(pod, "--all"), fetch(pod, "--all")
    assert first.rc == second.rc == 0 and not hit(first) and not hit(second), second.err[-3000:]
    assert "0 file(s) new or changed" in second.err


def test_a_repeated_fetch_asks_the_kept_agent_and_says_what_the_lean_and_full_paths_say(ssh_pod: Pod):
    assert ssh_pod.sshd is not None
    warm_fetch_pod(ssh_pod)
    again = fetch(ssh_pod, "--all")
    assert hit(again), again.err[-3000:]
    wait_until(lambda: hit(fetch(ssh_pod, "--all")) and _served_without_exec(ssh_pod),
               what="a repeated fetch answered by the pod's kept agent")
    lean = ssh_pod.wf("run.fetch", "--all", env=NO_CACHE)
    full = ssh_pod.wf("run.fetch", "--all", env={"WFOPS_LEAN": "0"})
    assert told(again) == told(lean) == told(full)
    assert again.out.splitlines() == [str((ssh_pod.root.parent / "artifacts" / f"r00{i}").resolve()) for i in range(3)]
    assert "0 file(s) new or changed" in again.err and " 0 bytes on the wire" in again.err
    one, one_lean = fetch(ssh_pod, "r001"), ssh_pod.wf("run.fetch", "r001", env=NO_CACHE)
    assert hit(fetch(ssh_pod, "r001")) and told(fetch(ssh_pod, "r001")) == told(one_lean) == told(one)


def _served_without_exec(pod: Pod) -> bool:
    assert pod.sshd is not None
    mark = pod.sshd.mark()
    res = fetch(pod, "--all")
    return res.rc == 0 and hit(res) and pod.sshd.counts(mark) == (0, 0)


def test_anything_to_copy_is_fetched_by_the_lean_path_and_said_once(ssh_pod: Pod):
    warm_fetch_pod(ssh_pod)
    local = ssh_pod.root.parent / "artifacts"
    assert hit(fetch(ssh_pod, "--all"))
    (ssh_pod.outputs / "r002" / "status.json").write_text('{"changed": true}')  # changed on the pod
    (local / "r000" / "status.json").unlink()  # removed here
    changed = fetch(ssh_pod, "--all")
    assert changed.rc == 0 and not hit(changed), changed.err[-3000:]
    assert fetch_summary(changed.err).count("wfops: fetched") == 1 and "2 file(s) new or changed" in changed.err
    assert (local / "r002" / "status.json").read_text() == '{"changed": true}'
    assert (local / "r000" / "status.json").read_bytes() == (ssh_pod.outputs / "r000" / "status.json").read_bytes()
    # a fetch that copied something is likely followed by another (a sweep still writing): the next one takes the
    # lean path at once, without asking for the plan first; one that copied nothing makes the one after a hit again
    after = fetch(ssh_pod, "--all")
    assert after.rc == 0 and not hit(after) and "0 file(s) new or changed" in after.err
    assert hit(again := fetch(ssh_pod, "--all")) and "0 file(s) new or changed" in again.err


def test_a_file_gone_on_the_pod_is_named_as_the_lean_path_names_it(ssh_pod: Pod):
    warm_fetch_pod(ssh_pod)
    (ssh_pod.outputs / "r001" / "status.json").unlink()
    gone = fetch(ssh_pod, "--all")
    assert hit(gone), gone.err[-3000:]
    assert told(gone) == told(ssh_pod.wf("run.fetch", "--all", env=NO_CACHE))
    assert "1 file(s) fetched earlier are no longer on the pod; kept here: r001/status.json" in gone.err


def test_a_replaced_run_and_a_refusal_are_the_lean_paths_and_an_abandoned_staging_folder_goes(ssh_pod: Pod):
    warm_fetch_pod(ssh_pod)
    local = ssh_pod.root.parent / "artifacts"
    assert hit(fetch(ssh_pod, "--all"))
    abandoned = local / ".incoming-1-2"  # a fetch killed outright left it: nobody holds its lock
    abandoned.mkdir()
    (abandoned / "half.bin").write_bytes(b"x")
    assert hit(fetch(ssh_pod, "--all")) and not abandoned.exists()
    (ssh_pod.outputs / "r000" / ".wfops-generation").write_text("another-generation")  # a rerun replaced it
    replaced = fetch(ssh_pod, "--all")
    assert replaced.rc == 0 and not hit(replaced) and "r000 was replaced on the pod" in replaced.err
    assert [p.name for p in local.iterdir() if p.name.startswith("r000.replaced-")]
    ssh_pod.ok("fsm.reset", "INIT", "--reason", "no fetch from here")  # the pod's gate refuses run.fetch now
    refused, lean = fetch(ssh_pod, "--all"), ssh_pod.wf("run.fetch", "--all", env=NO_CACHE)
    assert refused.rc != 0 and told(refused) == told(lean)


def test_a_config_the_plan_request_wrote_is_said_when_the_lean_path_fetches(ssh_pod: Pod):
    """The plan request's prelude syncs the pod's config as every request does; when the fetch then falls back, the
    lean path finds it written and says nothing of it: the fast path says the line (once), the rest is the lean
    path's."""
    warm_fetch_pod(ssh_pod)
    lines = {}
    for path, env in (("cached", PROFILE), ("lean", {**PROFILE, **NO_CACHE})):
        ssh_pod.env_path.unlink()  # the pod's copy of the config is gone: the next request writes it
        (ssh_pod.outputs / "r002" / "status.json").write_text(json.dumps({"changed": path}))  # something to copy
        res = ssh_pod.wf("run.fetch", "--all", env=env)
        assert res.rc == 0 and not hit(res) and ssh_pod.env_path.exists(), res.err[-3000:]
        lines[path] = fetch_summary(said(res)[2]).splitlines()
    assert lines["cached"] == lines["lean"] and sum("config written to" in ln for ln in lines["cached"]) == 1


def test_hash_fetches_never_ask_for_the_plan_twice(ssh_pod: Pod):
    """--hash reads every file on both sides for the plan: kept without the plan request, always the lean path."""
    warm_fetch_pod(ssh_pod)
    for _ in range(3):
        res = fetch(ssh_pod, "--all", "--hash")
        assert res.rc == 0 and not hit(res) and "0 file(s) new or changed" in res.err, res.err[-3000:]


def test_an_artifacts_dir_that_is_not_a_folder_is_one_line_on_every_path(ssh_pod: Pod):
    warm_fetch_pod(ssh_pod)
    local = ssh_pod.root.parent / "artifacts"
    shutil.rmtree(local)
    for make in (lambda: local.write_text("a file"), lambda: local.symlink_to(local)):  # a file, a link loop
        make()
        results = [ssh_pod.wf("run.fetch", "--all", env=env) for env in (PROFILE, NO_CACHE, {"WFOPS_LEAN": "0"})]
        for res in results:
            assert (res.rc, said(res)[2].splitlines()) == (2, [
                f"wfops: LOCAL_ARTIFACTS_DIR {local} is not a folder: move it away, or set LOCAL_ARTIFACTS_DIR to "
                "a folder; nothing was fetched"]), res.err[-3000:]
        assert local.is_symlink() or local.read_text() == "a file"
        local.unlink()


@pytest.mark.parametrize("kind", ["ssh", "local"])
def test_an_artifacts_dir_that_cannot_be_made_is_one_line_and_nothing_changes(kind: str, request, tmp_path: Path):
    """LOCAL_ARTIFACTS_DIR below a regular file, or where mkdir fails although the folder above looks writable
    (/proc/...: ENOENT, also as root): run.fetch ended in a traceback (NotADirectoryError from local_index, the
    mkdir's FileNotFoundError), exit 1, even for a run that does not exist. Now one line, exit 2, on every path."""
    pod: Pod = request.getfixturevalue(f"{kind}_pod")
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    pod.ok("fsm.reset", "CHECKED_OUT")
    envs = (PROFILE, NO_CACHE, {"WFOPS_LEAN": "0"}) if kind == "ssh" else ({},)
    for where, why in ((blocker / "art", f"cannot be made: {blocker} is not a folder"),
                       (Path("/proc/wfops-nope"), "cannot be made or used (No such file or directory)")):
        pod.configure(LOCAL_ARTIFACTS_DIR=str(where))
        for args in (("somerun",), ("--all",)):
            for env in envs:
                res = pod.wf("run.fetch", *args, env=env)
                assert (res.rc, said(res)[2].splitlines()) == (2, [
                    f"wfops: LOCAL_ARTIFACTS_DIR {where} {why}; nothing was fetched"]), (args, env, res.err[-2000:])
    assert blocker.read_text() == "x"

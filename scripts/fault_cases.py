"""The cases of scripts/fault_matrix.py: faults (issue 23's classes) and the hostile-input corpus.

Each case is (name, expected, function(harness) -> (held, observed)); the harness adds the checks every case gets
(no leftover process with the marker, no secret in any output, no run started twice unsaid)."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from scripts.fault_matrix import Case, Harness, Res, keeper_pids, one_line, revive_sshd, wait_for

SILENCE = 45 + 20  # the default keepalive (15 s x 3) and the default silence that moves a pod's runs (20 s)


def _runs(data: dict) -> dict[str, str]:
    return {r["run_id"]: r["state"] for r in data.get("runs", [])}


def _json(res: Res) -> dict:
    try:
        return json.loads(res.out)
    except ValueError:
        return {}


def csv_refusal(res: Res) -> bool:
    """A CSV refused as documented (README, exit codes): exit 2, a headline and one `line N:` line per problem."""
    lines = res.lines
    return (res.rc == 2 and "Traceback" not in res.err + res.out and len(lines) >= 2
            and lines[0].startswith("wfops: the sweep CSV has ") and all(ln.startswith("  line ") for ln in lines[1:]))


def _refusal(h: Harness, cfg: Path, args: list[str], pod: int | None = 0, rc: int | None = None,
             csv: bool = False) -> tuple[bool, str]:
    """Refused: one line (a CSV: its documented listing), no traceback, (with `pod`) nothing changed on that pod."""
    before = h.snapshot(pod) if pod is not None else {}
    res = h.wf(cfg, *args)
    same = pod is None or h.snapshot(pod) == before
    ok = (csv_refusal(res) or one_line(res)) if csv else one_line(res)
    ok = ok and same and (rc is None or res.rc == rc)
    return ok, res.short() + ("" if same else "; the pod CHANGED")


def _sweep_wait(h: Harness, cfg: Path, timeout: float = 240, env: dict[str, str] | None = None) -> Res:
    return h.wf(cfg, "sweep.wait", "--json", timeout=timeout, env=env)


# ------------------------------------------------------------------ partitions and dead pods


def _partition(h: Harness, freeze_secs: float) -> tuple[bool, str]:
    """Issue 23 #1 as the reporter ran it: 3 pods, 12 runs, pod 1's sshd and session tree SIGSTOPped
    `freeze_secs` from 9 s after sweep.start, with the defaults (keepalive, silence that moves runs)."""
    cfg = h.cfg(WF_FAKE_GPUS="1")
    rows = [f"k{i},config/train_tiny.py,{i},sleep=12,,1," for i in range(12)]
    res = h.wf(cfg, "sweep.start", "--csv", str(h.csv(rows)))
    if res.rc != 0:
        return False, "sweep.start " + res.short()
    waiting = h.popen(cfg, "sweep.wait", "--json")
    time.sleep(9)
    h.fleet.freeze(1)
    time.sleep(freeze_secs)
    h.fleet.thaw()
    res = h.finish(waiting, 600)
    data = _json(res)
    starts = h.starts()
    twice = sorted(r for r, n in starts.items() if n > 1)
    said = "ran on two pods" in res.err or bool(data.get("duplicates"))
    counted = sum(data.get("totals", {}).values()) if data else -1
    ok = (counted == 12 and set(_runs(data).values()) <= {"success"} and len(_runs(data)) == 12
          and (res.rc == 0 if not twice else (res.rc != 0 and said)))
    return ok, (f"sweep.wait exit {res.rc}; {len(_runs(data))} rows, counted {counted}; started twice: "
                f"{twice or 'none'}; duplicates said: {said}")


def partition_short(h: Harness) -> tuple[bool, str]:
    return _partition(h, 40)


def partition_long(h: Harness) -> tuple[bool, str]:
    return _partition(h, 128)


def _six_runs_one_running_on_pod_1(h: Harness, cfg: Path, prefix: str) -> str:
    """Start six 15 s runs (ids `prefix`0-5) on the fleet; once `prefix`1 runs on pod 1, warm every connection.
    What went wrong, or ""."""
    rows = [f"{prefix}{i},config/train_tiny.py,{i},sleep=15,,1," for i in range(6)]
    res = h.wf(cfg, "sweep.start", "--csv", str(h.csv(rows)))
    if res.rc != 0:
        return "sweep.start " + res.short()
    if not wait_for(lambda: (h.home(1) / "outputs" / f"{prefix}1" / "args.json").exists(), 90):
        return f"{prefix}1 never started on pod 1"
    h.wf(cfg, "sweep.status")  # the connections are warm
    return ""


def _dead_pod(h: Harness, **over: str) -> tuple[bool, str]:
    """Issue 23 #2: pod 1 killed (kill -9 of its sshd and every process with its HOME) while it runs one run and
    has one waiting; sweep.wait must move the waiting run and mark the running one lost."""
    cfg = h.cfg(None, "fleet.env", WF_FAKE_GPUS="1", **over)
    gone = h.fleet.pods[1].address
    problem = _six_runs_one_running_on_pod_1(h, cfg, "p")
    if problem:
        return False, problem
    h.fleet.kill(1)
    res = _sweep_wait(h, cfg, timeout=400)
    data = _json(res)
    states = _runs(data)
    pods = {r["run_id"]: r.get("pod") for r in data.get("runs", [])}
    ok = (states.get("p1") == "lost" and states.get("p4") == "success" and pods.get("p4") != gone
          and all(states.get(f"p{i}") == "success" for i in (0, 2, 3, 5)) and res.rc not in (0, 124)
          and len(res.lines) <= 3 and "Traceback" not in res.err)
    return ok, f"sweep.wait {res.short()}; states {dict(sorted(states.items()))}"


def dead_pod_warm(h: Harness) -> tuple[bool, str]:
    return _dead_pod(h)


def dead_pod_cold(h: Harness) -> tuple[bool, str]:
    return _dead_pod(h, WF_PERSIST_SECS="0")


# ------------------------------------------------------------------ the fleet ledger


def _finished_fleet(h: Harness) -> tuple[Path, Path]:
    cfg = h.cfg()
    h.wf(cfg, "sweep.start", "--csv", str(h.csv([f"g{i},config/train_tiny.py,{i},,,1," for i in range(3)])))
    _sweep_wait(h, cfg)
    return cfg, h.csv(["x0,config/train_tiny.py,7,,,1,"], "more.csv")


def _queued_anywhere(h: Harness, run_id: str) -> list[int]:
    return [p.index for p in h.fleet.pods if (p.home / "outputs" / run_id).exists()
            or any(f'"{run_id}"' in m.read_text() for m in (p.home / "outputs" / "_manifests").glob("sweep-*.json"))]


def ledger_unwritable(h: Harness) -> tuple[bool, str]:
    cfg, more = _finished_fleet(h)
    ledger = h.ledger(cfg)
    paths = [ledger.parent, ledger, ledger.parent / "latest"]
    res = subprocess.run(["chattr", "+i", *map(str, paths)], capture_output=True, text=True)
    if res.returncode != 0:
        return False, f"chattr +i failed here: {res.stderr.strip()}"
    h.chattrs += paths
    shown = h.wf(cfg, "sweep.status")
    added = h.wf(cfg, "sweep.add", "--csv", str(more))
    queued = _queued_anywhere(h, "x0")
    ok = (shown.rc == 0 and len(shown.lines) <= 1 and "Traceback" not in shown.err and one_line(added)
          and not queued)
    return ok, f"sweep.status {shown.short()}; sweep.add {added.short()}; x0 queued on pods {queued}"


def ledger_truncated(h: Harness) -> tuple[bool, str]:
    cfg, more = _finished_fleet(h)
    ledger = h.ledger(cfg)
    ledger.write_text(ledger.read_text()[:100])
    shown = h.wf(cfg, "sweep.status")
    added = h.wf(cfg, "sweep.add", "--csv", str(more))
    fetched = h.wf(cfg, "run.fetch", "--all")
    got = sorted(p.name for p in (cfg.parent / "artifacts").iterdir() if p.name[0] not in "._")
    ok = (one_line(shown) and one_line(added) and not _queued_anywhere(h, "x0") and fetched.rc == 0
          and "Traceback" not in fetched.err and got == ["g0", "g1", "g2"])
    return ok, f"sweep.status {shown.short()}; sweep.add {added.short()}; run.fetch --all exit {fetched.rc}, {got}"


def ledger_deleted(h: Harness) -> tuple[bool, str]:
    cfg, more = _finished_fleet(h)
    h.ledger(cfg).unlink()
    shown = h.wf(cfg, "sweep.status")
    added = h.wf(cfg, "sweep.add", "--csv", str(more))
    fetched = h.wf(cfg, "run.fetch", "--all")
    ok = one_line(shown) and one_line(added) and not _queued_anywhere(h, "x0") and fetched.rc == 0 \
        and "Traceback" not in fetched.err
    return ok, f"sweep.status {shown.short()}; sweep.add {added.short()}; run.fetch --all exit {fetched.rc}"


def add_nodes2_single(h: Harness) -> tuple[bool, str]:
    cfg = h.single()
    h.wf(cfg, "sweep.start", "--csv", str(h.csv(["a,config/train_tiny.py,1,,,1,"])))
    _sweep_wait(h, cfg)
    return _refusal(h, cfg, ["sweep.add", "--csv", str(h.csv(["wide,config/train_tiny.py,1,,,1,2"], "w.csv"))],
                    rc=2)


# ------------------------------------------------------------------ concurrent commands


def concurrent_starts(h: Harness) -> tuple[bool, str]:
    cfg = h.single()
    a = h.popen(cfg, "sweep.start", "--csv", str(h.csv(["c1,config/train_tiny.py,1,sleep=2,,1,"], "a.csv")))
    b = h.popen(cfg, "sweep.start", "--csv", str(h.csv(["c2,config/train_tiny.py,2,sleep=2,,1,"], "b.csv")))
    ra, rb = h.finish(a, 120), h.finish(b, 120)
    _sweep_wait(h, cfg)
    wins = [r for r in (ra, rb) if r.rc == 0]
    losers = [r for r in (ra, rb) if r.rc != 0]
    starts = h.starts()
    ok = len(wins) == 1 and all(one_line(r) for r in losers) and sum(starts.values()) == 1
    return ok, f"{ra.short()} / {rb.short()}; starts {dict(starts)}"


def concurrent_adds(h: Harness) -> tuple[bool, str]:
    cfg = h.cfg()
    h.wf(cfg, "sweep.start", "--csv", str(h.csv([f"s{i},config/train_tiny.py,{i},sleep=4,,1," for i in range(3)])))
    procs = [h.popen(cfg, "sweep.add", "--csv", str(h.csv([f"{n}0,config/train_tiny.py,9,,,1,"], f"{n}.csv")))
             for n in "ab"]
    got = [h.finish(p, 120) for p in procs]
    res = _sweep_wait(h, cfg)
    states = _runs(_json(res))
    starts = h.starts()
    added = [n for n, r in zip("ab", got, strict=True) if r.rc == 0]
    ok = (all(r.rc == 0 or one_line(r) for r in got) and all(states.get(f"{n}0") == "success" for n in added)
          and max(starts.values(), default=0) == 1 and res.rc == 0)
    most = max(starts.values(), default=0)
    return ok, f"adds {[r.short() for r in got]}; wait exit {res.rc}; states {states}; max starts {most}"


# ------------------------------------------------------------------ a frozen keeper, host keys


def keeper_frozen(h: Harness) -> tuple[bool, str]:
    cfg = h.single()
    fast = {"WFOPS_SSH_KEEPALIVE_SECS": "2"}
    run = h.wf(cfg, "task.run", "--id", "long", "--cmd", "sleep 20", env=fast)
    if run.rc != 0:
        return False, "task.run " + run.short()
    waiting = h.popen(cfg, "task.wait", "--id", "long", env=fast)
    time.sleep(3)
    keepers = keeper_pids([cfg.parent / "keepers"])
    for pid in keepers:
        os.kill(pid, signal.SIGSTOP)
    t0 = time.monotonic()
    res = h.finish(waiting, 90)
    took = time.monotonic() - t0
    for pid in keepers:
        os.kill(pid, signal.SIGCONT)
    ok = bool(keepers) and res.rc == 4 and one_line(res) and took < 60
    return ok, f"{len(keepers)} keeper(s) stopped; task.wait {res.short()} after {took:.0f}s"


def _new_host_key(h: Harness, i: int) -> str:
    pod = h.fleet.pods[i]
    cfg_file = pod.sshd.config
    assert cfg_file is not None, "the fleet's sshd has a config file"
    key = h.case_dir / "new_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    old = cfg_file.read_text()
    cfg_file.write_text("\n".join(f"HostKey {key}" if ln.startswith("HostKey ") else ln
                                  for ln in old.splitlines()) + "\n")
    h.fleet.cut(i)  # the sshd and every connection to it (a warm keeper's too): the keeper must reconnect
    revive_sshd(pod.sshd)
    return old


def _restore_host_key(h: Harness, i: int, old: str) -> None:
    pod = h.fleet.pods[i]
    assert pod.sshd.config is not None, "the fleet's sshd has a config file"
    pod.sshd.config.write_text(old)
    h.fleet.cut(i)
    revive_sshd(pod.sshd)


def _host_key(h: Harness, warm: bool) -> tuple[bool, str]:
    cfg = h.single(**({} if warm else {"WF_PERSIST_SECS": "0"}))
    first = h.wf(cfg, "fsm.status")
    if first.rc != 0:
        return False, "fsm.status " + first.short()
    old = _new_host_key(h, 0)
    try:
        res = h.wf(cfg, "fsm.status")
        run = h.wf(cfg, "task.run", "--id", "hk", "--cmd", "true")
    finally:
        _restore_host_key(h, 0, old)
    ok = res.rc == 4 and one_line(res) and "changed" in res.err and run.rc == 4 \
        and not (h.home(0) / "outputs" / "_tasks" / "hk").exists()
    return ok, f"fsm.status {res.short()}; task.run exit {run.rc}"


def host_key_cold(h: Harness) -> tuple[bool, str]:
    return _host_key(h, warm=False)


def host_key_warm(h: Harness) -> tuple[bool, str]:
    return _host_key(h, warm=True)


# ------------------------------------------------------------------ disk full, damaged state


def _small_disk(h: Harness) -> Path:
    outputs = h.home(0) / "outputs"
    saved = h.case_dir / "outputs-saved"
    subprocess.run(["cp", "-a", str(outputs), str(saved)], check=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(outputs)], capture_output=True,
                         text=True)
    if res.returncode != 0:
        raise RuntimeError(f"mount tmpfs: {res.stderr.strip()}")
    h.mounts.append(outputs)
    subprocess.run(f"cp -a {saved}/. {outputs}/", shell=True, check=True)
    return outputs


def _fill(directory: Path) -> None:
    subprocess.run(["dd", "if=/dev/zero", f"of={directory / 'ballast.bin'}", "bs=1M"], capture_output=True)


def disk_full_runs(h: Harness) -> tuple[bool, str]:
    cfg = h.single()
    outputs = _small_disk(h)
    h.wf(cfg, "sweep.start", "--csv", str(h.csv(["first,config/train_tiny.py,1,,,1,"], "first.csv")))
    _sweep_wait(h, cfg)
    _fill(outputs)
    ok, seen = _refusal(h, cfg, ["sweep.start", "--csv", str(h.csv(["second,config/train_tiny.py,2,,,1,"]))])
    shown = h.wf(cfg, "sweep.status")
    (outputs / "ballast.bin").unlink()
    ok = ok and shown.rc == 0 and "Traceback" not in shown.err
    return ok, f"sweep.start {seen}; sweep.status exit {shown.rc}"


def disk_full_tasks(h: Harness) -> tuple[bool, str]:
    cfg = h.single()
    outputs = _small_disk(h)
    h.wf(cfg, "task.run", "--id", "before", "--cmd", "true")
    h.wf(cfg, "task.wait", "--id", "before")
    _fill(outputs)
    res = h.wf(cfg, "task.run", "--id", "big", "--cmd", "true")
    listed = h.wf(cfg, "task.list")
    left = (outputs / "_tasks" / "big").exists()
    (outputs / "ballast.bin").unlink()
    ok = one_line(res) and res.rc == 6 and not left and listed.rc == 0
    return ok, f"task.run {res.short()}; task dir left: {left}; task.list exit {listed.rc}"


def damaged_live_status(h: Harness) -> tuple[bool, str]:
    cfg = h.single()
    csv = h.csv(["live,config/train_tiny.py,1,sleep=4,,1,"])
    h.wf(cfg, "sweep.start", "--csv", str(csv))
    run = h.home(0) / "outputs" / "live"
    if not wait_for(lambda: (run / "args.json").exists(), 90):
        return False, "the run never started"
    (run / "status.json").write_text("garbage{")
    first = _runs(_json(_sweep_wait(h, cfg)))
    again = h.wf(cfg, "sweep.start", "--csv", str(csv))
    second = _runs(_json(_sweep_wait(h, cfg)))
    starts = h.starts()
    ok = first == {"live": "success"} and again.rc == 0 and second == {"live": "skipped"} and starts["live"] == 1
    return ok, f"ended {first}; next sweep.start {second}; started {starts['live']}x"


def damaged_tasks(h: Harness) -> tuple[bool, str]:
    cfg = h.single()
    h.wf(cfg, "task.run", "--id", "t1", "--cmd", "true")
    h.wf(cfg, "task.wait", "--id", "t1")
    tasks = h.home(0) / "outputs" / "_tasks"
    for tid, content in (("bad-json", "{trunc"), ("bad-shape", "[]"), ("bad-state", '{"state": 5}')):
        (tasks / tid).mkdir()
        (tasks / tid / "status.json").write_text(content)
    (tasks / "no-status").mkdir()
    res = h.wf(cfg, "task.list", "--json")
    shown = {t["id"]: t.get("state") for t in _json(res).get("tasks", [])}
    ok = res.rc == 0 and all(shown.get(t) in ("unknown", "missing") for t in
                             ("bad-json", "bad-shape", "bad-state", "no-status"))
    return ok, f"task.list exit {res.rc}: {shown}"


def damaged_manifest(h: Harness) -> tuple[bool, str]:
    cfg = h.single()
    h.wf(cfg, "sweep.start", "--csv", str(h.csv(["a,config/train_tiny.py,1,,,1,"])))
    _sweep_wait(h, cfg)
    (h.home(0) / "outputs" / "_manifests" / "sweep-latest.json").write_text('{"runs":5}')
    fetched = h.wf(cfg, "run.fetch", "--all")
    shown = h.wf(cfg, "sweep.status")
    ok = one_line(fetched) and "Traceback" not in shown.err
    return ok, f"run.fetch --all {fetched.short()}; sweep.status exit {shown.rc}"


# ------------------------------------------------------------------ Ctrl-C of sweep.start


def _interrupted_well(res: Res, done: str) -> bool:
    """Ctrl-C as docs/faults.md promises: exit 130 and wfops' one line; or the command had finished (exit 0); or
    it had finished and printed its whole report (`done` on stdout) when the signal came during Python's shutdown,
    which then ends by the signal (exit -2, 130 in a shell) with no line (docs/faults.md, Decisions). Never a
    traceback; every stderr line is wfops' own (`config written` may come first)."""
    info = all(ln.startswith("wfops: ") for ln in res.lines) and "Traceback" not in res.err + res.out
    if res.rc == 130:
        return info and res.lines[-1].startswith("wfops: interrupted")
    return info and (res.rc == 0 or (res.rc == -signal.SIGINT and done in res.out))


def _ctrl_c(offset: float) -> Case:
    def case(h: Harness) -> tuple[bool, str]:
        cfg = h.single()
        before = h.snapshot(0)
        proc = h.popen(cfg, "sweep.start", "--csv", str(h.csv(["i0,config/train_tiny.py,1,sleep=1,,1,"])))
        time.sleep(offset)
        try:
            os.killpg(proc.pid, signal.SIGINT)
        except ProcessLookupError:
            pass
        res = h.finish(proc, 120)
        after = h.snapshot(0)
        shown = h.wf(cfg, "sweep.status", "--json")
        started = bool(_runs(_json(shown)))
        if started:
            _sweep_wait(h, cfg)
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        consistent = started or not changed
        n = h.starts().get("i0", 0)
        fine = _interrupted_well(res, "started sweep-")
        ok = fine and "Traceback" not in res.err and consistent and n <= 1 and "Traceback" not in shown.err
        return ok, (f"{res.short()}; sweep started: {started}; pod consistent: {consistent}"
                    f"{'' if consistent else f' (changed: {changed[:4]})'}; run started {n}x")

    return (f"Ctrl-C of sweep.start at {offset:g} s", "exit 130 one line (or 0, done); the sweep all or nothing",
            case)


# ------------------------------------------------------------------ overrides and config values


def _validate(h: Harness, rows: list[str] | bytes, start_too: bool = False) -> tuple[bool, str]:
    path = h.case_dir / "bad.csv"
    if isinstance(rows, bytes):
        path.write_bytes(rows)
    else:
        path.write_text(HEADER_N + "".join(r + "\n" for r in rows))
    cfg = h.single()
    res = h.wf(cfg, "sweep.validate", "--csv", str(path))
    ok, seen = (csv_refusal(res) or one_line(res)) and res.rc == 2, f"validate {res.short()}"
    if start_too:
        started_ok, started = _refusal(h, cfg, ["sweep.start", "--csv", str(path)], csv=True)
        ok, seen = ok and started_ok, seen + f"; start {started}"
    return ok, seen


HEADER_N = "run_id,config,seed,overrides,notes,gpus,nodes\n"


def override_too_long(h: Harness) -> tuple[bool, str]:
    return _validate(h, [f"a,config/train_tiny.py,1,x={'y' * 131_072},,1,"], start_too=True)


def override_nul(h: Harness) -> tuple[bool, str]:
    return _validate(h, (HEADER_N + "a,config/train_tiny.py,1,x=1\0y,,1,\n").encode(), start_too=True)


def _config_show(h: Harness, lines: list[str]) -> tuple[bool, str]:
    cfg = h.single()
    with cfg.open("a") as fh:
        fh.write("".join(ln + "\n" for ln in lines))
    res = h.wf(cfg, "config.show")
    task = h.wf(cfg, "task.run", "--id", "c", "--cmd", "true")
    pwned = [p for p in Path("/tmp").glob("wfm-pwn*")]
    ok = one_line(res) and res.rc == 2 and one_line(task) and task.rc == 2 and not pwned
    return ok, f"config.show {res.short()}; task.run exit {task.rc}" + (f"; PWNED {pwned}" if pwned else "")


def _config_case(name: str, lines: list[str]) -> Case:
    return (name, "config.show and task.run refused at load: exit 2, one line", lambda h: _config_show(h, lines))


# ------------------------------------------------------------------ the hostile corpus


def _csv_case(name: str, rows: list[str] | bytes, start_too: bool = False) -> Case:
    return (f"hostile CSV: {name}", "sweep.validate refused: exit 2, one line (or the CSV listing)" +
            ("; sweep.start refused, pod unchanged" if start_too else ""),
            lambda h: _validate(h, rows, start_too))


def _verbatim(h: Harness) -> tuple[bool, str]:
    """Hostile strings where they are allowed (override values): they arrive verbatim, nothing is executed."""
    cfg = h.single()
    values = ["$(touch /tmp/wfm-pwn1)", "`touch /tmp/wfm-pwn2`", "a;touch /tmp/wfm-pwn3", "'\"\\ |&>",
              "ünïcødé ‮rtl"]
    words = " ".join(shlex.quote(f"k{i}={v}") for i, v in enumerate(values))  # overrides are shell-like words
    rows = [["v", "config/train_tiny.py", "1", words, "", "1", ""]]
    import csv as csv_module

    path = h.case_dir / "v.csv"
    with path.open("w", newline="") as fh:
        w = csv_module.writer(fh)
        w.writerow(HEADER_N.strip().split(","))
        w.writerows(rows)
    res = h.wf(cfg, "sweep.start", "--csv", str(path))
    _sweep_wait(h, cfg)
    args_file = h.home(0) / "outputs" / "v" / "args.json"
    argv = json.loads(args_file.read_text())["argv"] if args_file.exists() else []
    arrived = all(f"k{i}={v}" in argv for i, v in enumerate(values))
    pwned = sorted(str(p) for p in Path("/tmp").glob("wfm-pwn*"))
    ok = res.rc == 0 and arrived and not pwned
    return ok, f"sweep.start {res.short()}; arrived verbatim: {arrived}; executed: {pwned or 'nothing'}"


def _config_path(h: Harness) -> tuple[bool, str]:
    """A config path with shell metacharacters is a (legal) file name: it may fail as a missing file, never runs."""
    cfg = h.single()
    res = h.wf(cfg, "sweep.start", "--csv", str(h.csv(["a,config/x.py;touch /tmp/wfm-pwn7,1,,,1,",
                                                       "b,config/$(touch /tmp/wfm-pwn9).py,1,,,1,"])))
    waited = _sweep_wait(h, cfg)
    pwned = sorted(str(p) for p in Path("/tmp").glob("wfm-pwn*"))
    ok = not pwned and "Traceback" not in res.err + waited.err and (res.rc == 0 or one_line(res))
    return ok, f"sweep.start {res.short()}; sweep.wait exit {waited.rc} {_runs(_json(waited))}; executed: " \
               f"{pwned or 'nothing'}"


def _pod_frozen_single(h: Harness, **over: str) -> tuple[bool, str]:
    """A single pod's sshd and session tree SIGSTOPped (a frozen pod or network): a command ends exit 4 with one
    line that says the pod did not answer, within the keepalive deadline (15 s x 3) and the connect timeout."""
    cfg = h.single(**over)
    h.wf(cfg, "fsm.status")  # with keepers: the keeper is warm
    h.fleet.freeze(0)
    t0 = time.monotonic()
    res = h.wf(cfg, "sweep.status", timeout=180)
    took = time.monotonic() - t0
    h.fleet.thaw()
    said = any(w in res.err for w in ("answer", "frozen", "timed out", "timeout"))
    ok = res.rc == 4 and one_line(res) and took < 120 and said
    return ok, f"sweep.status {res.short()} after {took:.0f}s"


def pod_frozen_single(h: Harness) -> tuple[bool, str]:
    return _pod_frozen_single(h)


def pod_frozen_single_cold(h: Harness) -> tuple[bool, str]:
    return _pod_frozen_single(h, WF_PERSIST_SECS="0")


def dead_pod_back(h: Harness) -> tuple[bool, str]:
    """Issue 23 #2's second half: the killed pod comes back (sshd and volume, not its processes) before
    sweep.wait: its waiting run must still be moved (its queue is gone) and its running run marked lost."""
    cfg = h.cfg(WF_FAKE_GPUS="1")
    problem = _six_runs_one_running_on_pod_1(h, cfg, "q")
    if problem:
        return False, problem
    h.fleet.kill(1)
    h.fleet.revive(1)
    res = _sweep_wait(h, cfg, timeout=400)
    states = _runs(_json(res))
    ok = states.get("q1") == "lost" and states.get("q4") == "success" and res.rc not in (0, 124) \
        and "Traceback" not in res.err
    return ok, f"sweep.wait {res.short()}; states {dict(sorted(states.items()))}"


def _ctrl_c_add(offset: float) -> Case:
    def case(h: Harness) -> tuple[bool, str]:
        cfg = h.cfg()
        h.wf(cfg, "sweep.start", "--csv", str(h.csv([f"s{i},config/train_tiny.py,{i},sleep=3,,1," for i in range(3)])))
        proc = h.popen(cfg, "sweep.add", "--csv", str(h.csv(["x0,config/train_tiny.py,7,,,1,"], "more.csv")))
        time.sleep(offset)
        try:
            os.killpg(proc.pid, signal.SIGINT)
        except ProcessLookupError:
            pass
        res = h.finish(proc, 120)
        waited = _sweep_wait(h, cfg)
        in_ledger = "x0" in json.loads(h.ledger(cfg).read_text()).get("runs", {})
        queued = _queued_anywhere(h, "x0")
        states = _runs(_json(waited))
        n = h.starts().get("x0", 0)
        fine = _interrupted_well(res, "run(s) queued")
        consistent = (in_ledger and states.get("x0") == "success" and n == 1) or (not in_ledger and not queued)
        ok = fine and consistent and waited.rc == 0
        return ok, (f"{res.short()}; x0 in ledger: {in_ledger}, queued on pods {queued}, started {n}x; "
                    f"sweep.wait exit {waited.rc}")

    return (f"Ctrl-C of sweep.add (fleet) at {offset:g} s", "exit 130 one line (or 0); x0 in the ledger and run "
            "once, or nowhere", case)


def run_fills_disk(h: Harness) -> tuple[bool, str]:
    cfg = h.single()
    _small_disk(h)
    h.wf(cfg, "sweep.start", "--csv", str(h.csv(["filler,config/train_tiny.py,1,fill=1,,1,",
                                                 "next,config/train_tiny.py,2,,,1,"])))
    res = _sweep_wait(h, cfg)
    data = _json(res)
    row: dict[str, Any] = next((r for r in data.get("runs", []) if r["run_id"] == "filler"), {})
    shown = h.wf(cfg, "sweep.status")
    ok = (row.get("state") == "failed" and "disk_full" in row.get("note", "") and res.rc not in (0, 124)
          and "Traceback" not in res.err + shown.err and shown.rc == 0)
    return ok, f"sweep.wait {res.short()}; filler {row.get('state')}: {row.get('note', '')[:60]}"


def concurrent_task_ids(h: Harness) -> tuple[bool, str]:
    cfg = h.single()
    h.wf(cfg, "fsm.status")
    procs = [h.popen(cfg, "task.run", "--id", "same", "--cmd", f"echo {n}") for n in "ab"]
    got = [h.finish(p, 120) for p in procs]
    waited = h.wf(cfg, "task.wait", "--id", "same")
    wins = [r for r in got if r.rc == 0]
    ok = len(wins) == 1 and all(one_line(r) for r in got if r.rc != 0) and waited.rc == 0
    return ok, f"{got[0].short()} / {got[1].short()}; task.wait exit {waited.rc}"


def secret_in_task_output(h: Harness) -> tuple[bool, str]:
    """A task prints the secret from the pod env: what wfops shows of its log has it masked."""
    cfg = h.single()
    h.wf(cfg, "task.run", "--id", "leak", "--cmd", 'echo "token=$HF_TOKEN"')
    h.wf(cfg, "task.wait", "--id", "leak")
    logs = h.wf(cfg, "task.logs", "--id", "leak")
    status = h.wf(cfg, "task.status", "--id", "leak")
    shown = "token=" in logs.out + logs.err
    ok = shown and logs.rc == 0 and status.rc == 0
    return ok, f"task.logs exit {logs.rc}, the line shown: {shown} (the secret check below)"


def _task_id(tid: str) -> Case:
    def case(h: Harness) -> tuple[bool, str]:
        return _refusal(h, h.single(), ["task.run", "--id", tid, "--cmd", "true"], rc=2)

    return (f"hostile task id {tid[:24]!r}", "task.run refused: exit 2, one line, pod unchanged", case)


def _fetch_id(rid: str, command: str = "run.fetch") -> Case:
    def case(h: Harness) -> tuple[bool, str]:
        cfg = h.single()
        ok, seen = _refusal(h, cfg, [command, rid])
        outside = [p for p in (h.case_dir.parent, Path("/tmp")) if (p / "wfm-escape").exists()]
        return ok and not outside, seen

    return (f"hostile run id to {command} {rid[:24]!r}", "refused: one line, nothing written", case)


def _add_case(name: str, row: str, rc: int = 2) -> Case:
    def case(h: Harness) -> tuple[bool, str]:
        cfg = h.cfg()
        h.wf(cfg, "sweep.start", "--csv", str(h.csv(["a,config/train_tiny.py,1,,,1,"])))
        _sweep_wait(h, cfg)
        ledger = h.ledger(cfg).read_text()
        before = [h.snapshot(i) for i in range(3)]
        res = h.wf(cfg, "sweep.add", "--csv", str(h.csv([row], "more.csv")))
        same = [h.snapshot(i) for i in range(3)] == before and h.ledger(cfg).read_text() == ledger
        ok = (csv_refusal(res) or one_line(res)) and res.rc == rc and same
        return ok, res.short() + ("" if same else "; CHANGED")

    return (f"hostile sweep.add (fleet): {name}",
            f"refused: exit {rc}, one line (or the CSV listing), no pod or ledger changed", case)


def control_scan(h: Harness) -> tuple[bool, str]:
    """Positive control: the /proc scan sees a live run (and the secret check sees the secret in a file)."""
    cfg = h.single()
    h.wf(cfg, "sweep.start", "--csv", str(h.csv(["live,config/train_tiny.py,1,sleep=30,,1,"])))
    seen = wait_for(lambda: len(h.marked()) > 0 and h.starts().get("live"), 90)
    n = len(h.marked())
    stopped = h.wf(cfg, "sweep.stop")
    env_file = (h.home(0) / "project.env").read_text()
    ok = seen and stopped.rc == 0 and h.secret in env_file
    return ok, f"{n} marked process(es) while the run lived; sweep.stop exit {stopped.rc}; secret in the pod env file"


LONG = "x" * 300
CASES: list[Case] = [
    ("control: the leftover scan sees a live run", "the marker found in live runs, none after sweep.stop",
     control_scan),
    ("partition 40 s (pod 1 SIGSTOPped, defaults)", "nothing moved, each run once, sweep.wait 0", partition_short),
    ("partition 128 s (pod 1 SIGSTOPped, defaults)", "no run twice unsaid; counted once; wait not 0 if twice",
     partition_long),
    ("pod killed -9 mid-sweep, warm connections on", "waiting run moved and ran, running run lost", dead_pod_warm),
    ("pod killed -9 mid-sweep, WF_PERSIST_SECS=0", "waiting run moved and ran, running run lost", dead_pod_cold),
    ("pod killed -9 and back before sweep.wait, warm", "waiting run moved and ran, running run lost",
     dead_pod_back),
    ("single pod SIGSTOPped, warm keeper (defaults)", "exit 4, one line saying it did not answer, in time",
     pod_frozen_single),
    ("single pod SIGSTOPped, WF_PERSIST_SECS=0", "exit 4, one line saying it did not answer, in time",
     pod_frozen_single_cold),
    ("fleet ledger unwritable (chattr +i)", "status one line at most; add refused, nothing queued",
     ledger_unwritable),
    ("fleet ledger truncated", "status/add one line; run.fetch --all fetches", ledger_truncated),
    ("fleet ledger deleted", "status/add one line; run.fetch --all exit 0", ledger_deleted),
    ("sweep.add nodes=2 on a single pod", "refused exit 2, one line, pod unchanged", add_nodes2_single),
    ("two sweep.start at once (one pod)", "one starts, the other one line; one run start", concurrent_starts),
    ("two sweep.add at once (fleet)", "both added (or one line), each run once", concurrent_adds),
    ("keeper SIGSTOPped mid task.wait", "exit 4, one line, within the deadline", keeper_frozen),
    ("changed host key, cold", "exit 4 one line naming the change; nothing ran", host_key_cold),
    ("changed host key, warm keeper", "exit 4 one line naming the change; nothing ran", host_key_warm),
    ("disk full: sweep.start", "exit 6 one line, pod unchanged; status answers", disk_full_runs),
    ("disk full: task.run", "exit 6 one line, no task dir left", disk_full_tasks),
    ("garbage in a live run's status.json", "ends success; next start skips it; ran once", damaged_live_status),
    ("damaged task files", "task.list lists them unknown/missing", damaged_tasks),
    ("sweep-latest.json = {\"runs\":5}", "run.fetch --all one line", damaged_manifest),
    *[_ctrl_c(t) for t in (0.05, 0.15, 0.3, 0.6, 1.0, 2.0)],
    *[_ctrl_c_add(t) for t in (0.5, 1.0, 1.5)],
    ("a run fills the disk", "the run failed disk_full, the sweep ends, status answers", run_fills_disk),
    ("two task.run of one id at once", "one runs, the other one line", concurrent_task_ids),
    ("a task prints the secret from the pod env", "its log shown, the secret masked", secret_in_task_output),
    ("override of 131,072 characters", "validate and start refuse: exit 2, one line", override_too_long),
    ("override with a NUL", "validate and start refuse: exit 2, one line", override_nul),
    _config_case("config line with no '='", ["JUSTAWORD"]),
    _config_case("port 0", ["OPS_DEFAULT_HOST=root@127.0.0.2:0"]),
    _config_case("port 99999", ["OPS_DEFAULT_HOST=root@127.0.0.2:99999"]),
    _config_case("host starting with '-' (ssh option)", ["OPS_DEFAULT_HOST='-oProxyCommand=touch /tmp/wfm-pwn0'"]),
    _config_case("host with ';'", ["OPS_DEFAULT_HOST='root@h;touch /tmp/wfm-pwn0'"]),
    _config_case("port not a number", ["OPS_DEFAULT_HOST=root@127.0.0.2:abc"]),
    _config_case("TASK_TIMEOUT_SECS=-1", ["TASK_TIMEOUT_SECS=-1"]),
    _config_case("TASK_TIMEOUT_SECS=1e999", ["TASK_TIMEOUT_SECS=1e999"]),
    _config_case("a value of 200 KiB", [f"EXTRA_NOTE={'v' * 204_800}"]),
    _config_case("undefined ${REF}", ["OPS_REMOTE_REPO=${NOPE_NOT_SET}"]),
    _config_case("control character in a value", ["OPS_DEFAULT_HOST='root@127.0.0.2\x1b[31m'"]),
    _config_case("KILL_GRACE_SECS=abc", ["KILL_GRACE_SECS=abc"]),
    ("hostile override values (shell metacharacters, unicode)", "accepted, verbatim, nothing executed", _verbatim),
    _csv_case("run id ../escape", ["../escape,config/train_tiny.py,1,,,1,"], start_too=True),
    _csv_case("run id /abs", ["/abs,config/train_tiny.py,1,,,1,"]),
    _csv_case("run id $(touch)", ["$(touch /tmp/wfm-pwn5),config/train_tiny.py,1,,,1,"], start_too=True),
    _csv_case("run id with ;", ["a;touch /tmp/wfm-pwn6,config/train_tiny.py,1,,,1,"]),
    _csv_case("run id with a newline", ['"a\nb",config/train_tiny.py,1,,,1,']),
    _csv_case("run id with ESC", ["a\x1b[31mb,config/train_tiny.py,1,,,1,"]),
    _csv_case("run id of 300 chars", [f"{LONG},config/train_tiny.py,1,,,1,"]),
    _csv_case("run id empty", [",config/train_tiny.py,1,,,1,"]),
    _csv_case("run id . and ..", [".,config/train_tiny.py,1,,,1,", "..,config/train_tiny.py,2,,,1,"]),
    _csv_case("duplicate run ids", ["d,config/train_tiny.py,1,,,1,", "d,config/train_tiny.py,2,,,1,"],
              start_too=True),
    _csv_case("config ../../etc/passwd", ["a,../../etc/passwd,1,,,1,"], start_too=True),
    _csv_case("config /etc/passwd", ["a,/etc/passwd,1,,,1,"]),
    ("hostile config path with ; and $( )", "never executed (a file name); no traceback", _config_path),
    _csv_case("seed abc", ["a,config/train_tiny.py,abc,,,1,"]),
    _csv_case("seed 10**30", ["a,config/train_tiny.py,1000000000000000000000000000000,,,1,"]),
    _csv_case("seed -1", ["a,config/train_tiny.py,-1,,,1,"]),
    _csv_case("gpus 0", ["a,config/train_tiny.py,1,,,0,"]),
    _csv_case("gpus -1", ["a,config/train_tiny.py,1,,,-1,"]),
    _csv_case("gpus abc", ["a,config/train_tiny.py,1,,,abc,"]),
    _csv_case("gpus 99999", ["a,config/train_tiny.py,1,,,99999,"], start_too=True),
    _csv_case("nodes 0", ["a,config/train_tiny.py,1,,,1,0"]),
    _csv_case("nodes abc", ["a,config/train_tiny.py,1,,,1,abc"]),
    _csv_case("override with no =", ["a,config/train_tiny.py,1,justaword,,1,"]),
    _csv_case("override key with a space", ["a,config/train_tiny.py,1,a b=1 =2,,1,"]),
    _csv_case("override key starting with -", ["a,config/train_tiny.py,1,--x=1 -rf=2,,1,"]),
    _csv_case("header only", []),
    _csv_case("wrong header", b"id,cfg\na,b\n"),
    _csv_case("empty file", b""),
    _csv_case("not UTF-8", (HEADER_N + "a\xff,config/train_tiny.py,1,,,1,\n").encode("latin-1")),
    _csv_case("a row with too many fields", ["a,config/train_tiny.py,1,,,1,,extra,more"]),
    _csv_case("a field of 1 MiB", [f"a,config/train_tiny.py,1,,{'n' * (1 << 20)},1,"]),
    _task_id("../escape"),
    _task_id("a/b"),
    _task_id("-rf"),
    _task_id("$(touch /tmp/wfm-pwn8)"),
    _task_id("x" * 300),
    _task_id(""),
    _task_id("a b"),
    _task_id("a\nb"),
    _task_id("a\x1b[31m"),
    _fetch_id("../../wfm-escape"),
    _fetch_id("/tmp/wfm-escape"),
    _fetch_id("a/../../wfm-escape"),
    _fetch_id("../../wfm-escape", "run.logs"),
    _fetch_id("$(touch /tmp/wfm-pwn4)", "run.logs"),
    _add_case("run id ../escape", "../escape,config/train_tiny.py,1,,,1,"),
    _add_case("override with a NUL", "n,config/train_tiny.py,1,x=1\0y,,1,"),
    _add_case("override of 131,072 characters", f"o,config/train_tiny.py,1,x={'y' * 131_072},,1,"),
    _add_case("gpus -1", "g,config/train_tiny.py,1,,,-1,"),
    _add_case("the existing run id again", "a,config/train_tiny.py,1,,,1,", rc=10),
]

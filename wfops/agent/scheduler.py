"""The sweep queue: a Python scheduler started in the tmux `sweep` window as `agent sweep-run MANIFEST`.

The manifest JSON that sweep.start uploaded is its only input. It walks the queue in CSV order: skips a
run whose summary says ok (unless force), keeps an earlier attempt in _previous/, writes the exact command
to command.sh, and runs each under its own supervisor process (supervisor.py), which owns every process of
the run. It goes on past failures unless fail_fast, stops cleanly on TERM (sweep.stop), and at the end
records the sweep's end and SWEEP_COMPLETED.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time

from . import facts, launch, outcome, procs, store, supervisor, workflow
from .registry import command
from .states import (
    CODE_STATES,
    COMMAND_FILE,
    FAILED,
    LOG_FILE,
    QUEUE_COMPLETED,
    QUEUE_STOPPED,
    SPEC_FILE,
    STATUS_FILE,
    SUCCESS,
    SUMMARY_FILE,
    SYNC_LOG,
    Layout,
)

STOPPED_WHY = "stopped by sweep.stop"
STOP_REASONS = {signal.SIGTERM: STOPPED_WHY, signal.SIGINT: "interrupted (SIGINT)",
                signal.SIGHUP: "its tmux session or server went away (SIGHUP)"}


class QueueLog:
    """The queue's log: the tmux window and _manifests/<sweep>.log."""

    def __init__(self, path: str) -> None:
        self.fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the queue

    def __call__(self, text: str) -> None:
        line = "%s %s\n" % (store.now_iso(), text)
        try:
            self.fh.write(line)
            self.fh.flush()
        except OSError:  # a full disk: the tmux window still shows it
            pass
        try:
            sys.stdout.write(line)
            sys.stdout.flush()
        except OSError:  # the tmux window is gone (its terminal answers EIO): the log file still has it
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - replaces stdout for the rest of the queue


def _env_value(env_path: str, key: str) -> str:
    """A variable as the pod env file sets it (the file is bash; bash reads it)."""
    if not env_path or not os.path.isfile(env_path):
        return os.environ.get(key, "")
    p = subprocess.run(["bash", "-c", 'set -a; . "$1" >/dev/null 2>&1; printf %s "${%s-}"' % key, "wfops", env_path],
                       capture_output=True, text=True, stdin=subprocess.DEVNULL)
    return p.stdout


class Scheduler:
    def __init__(self, manifest_path: str) -> None:
        m = store.load(manifest_path, required=("sweep_id", "queue", "exec", "pod"))
        self.m, self.ex, self.sid = m, m["exec"], m["sweep_id"]
        self.pod = Layout.from_dict(m["pod"])
        self.log = QueueLog(os.path.join(self.pod.manifests, self.sid + ".log"))
        self.venv_python = os.path.join(self.ex["repo"], ".venv", "bin", "python")
        self.stop_why, self.child = "", None
        self.nproc = 0

    # ---------------------------------------------------------------- signals
    def on_term(self, signum, _frame) -> None:
        self.stop_why = self.stop_why or STOP_REASONS.get(signum, STOPPED_WHY)
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM)

    def start(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self.on_term)
        procs.become_subreaper()  # orphans of a killed supervisor come here, and are ended by their mark
        store.hold_reserve(self.pod.control)  # room to record the sweep's end on a full disk
        me = os.getpid()
        ex = self.ex
        if ex.get("nproc"):
            self.nproc = int(ex["nproc"])
        else:
            self.nproc = facts.gpu_count(self.venv_python, _env_value(self.pod.env_path, "CUDA_VISIBLE_DEVICES"))
            if ex.get("cpu_only") and self.nproc < 1:
                self.nproc = 1
        store.update_json(self.pod.sweep_file, {"pid": me, "pid_start": procs.proc_start(me),
                                                "boot_id": procs.boot_id(), "nproc": self.nproc,
                                                "git_sha": self.m.get("git_sha")}, keep_terminal=False)

    # ---------------------------------------------------------------- one run
    def should_skip(self, run_dir: str) -> bool:
        if self.m.get("force"):
            return False
        summ, _ = store.load_or_note(os.path.join(run_dir, SUMMARY_FILE))
        return bool(summ) and summ.get("ok") is True

    def fresh_dirs(self, run_id: str) -> tuple:
        """(run dir, output dir); an earlier attempt is kept in _previous/. The run dir is not made here:
        `prepare` builds it whole and renames it into place."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        d = self.pod.run_dir(run_id)
        if os.path.lexists(d):
            os.makedirs(self.pod.previous, exist_ok=True)
            os.rename(d, os.path.join(self.pod.previous, "%s.%s" % (run_id, stamp)))
            self.log("%s: the previous attempt is kept in _previous/%s.%s" % (run_id, run_id, stamp))
        out = d
        if self.ex.get("mode") == "local_sync":
            out = os.path.join(self.ex["local_root"], run_id)
            if os.path.lexists(out):
                os.rename(out, "%s.previous.%s" % (out, stamp))
            os.makedirs(out)
        return d, out

    def argv(self, run: dict, out: str) -> list:
        ex = self.ex

        def arg(key: str, value: str) -> str:
            return "--%s=%s" % (key, value) if ex.get("arg_style") == "dashdash" else "%s=%s" % (key, value)

        argv = [self.venv_python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=%d" % self.nproc,
                ex["train_script"], run["config"]]
        if ex.get("inject_out_dir"):
            argv.append(arg("out_dir", out))
        if ex.get("inject_data_dir"):
            argv.append(arg("data_dir", ex["data_dir"]))
        return argv + list(run.get("args") or [])

    def command_text(self, run: dict, argv: list) -> str:
        return ("#!/usr/bin/env bash\n# wfops run %s of %s: the exact command, as run\nset -a; . %s; set +a\n"
                "cd %s || exit 2\nexec %s\n" % (run["run_id"], self.sid, shlex.quote(self.pod.env_path),
                                               shlex.quote(self.ex["workdir"]), launch.shell_words(argv)))

    def spec(self, run: dict, d: str, out: str) -> dict:
        ex = self.ex
        spec = {"argv": ["bash", os.path.join(d, COMMAND_FILE)], "status": os.path.join(d, STATUS_FILE),
                "log": os.path.join(d, LOG_FILE), "timeout": ex.get("timeout_secs") or 0,
                "grace": ex.get("grace_secs", 20), "summary": True,
                "extra": {"run_id": run["run_id"], "sweep_id": self.sid, "config": run["config"],
                          "notes": run.get("notes", ""), "out_dir": out, "mode": ex.get("mode"),
                          "git_sha": self.m.get("git_sha"), "seed": run.get("seed"), "nproc": self.nproc}}
        if ex.get("mode") == "local_sync":
            spec["sync"] = {"src": out + "/", "dst": d + "/", "interval": ex.get("sync_secs", 60),
                            "log": os.path.join(d, SYNC_LOG)}
        return spec

    def supervise(self, spec_path: str) -> int:
        env = dict(os.environ)
        if self.ex.get("cpu_only"):
            env.setdefault("GLOO_SOCKET_IFNAME", "lo")
        self.child = subprocess.Popen(launch.agent_argv("supervise", spec_path), stdin=subprocess.DEVNULL, env=env)
        if self.stop_why:  # a stop that came while it was starting
            self.child.send_signal(signal.SIGTERM)
        rc = self.child.wait()
        self.child = None
        return rc

    def prepare(self, run: dict) -> tuple:
        """Make the run dir whole (command.sh, spec.json) in a hidden temp dir and rename it into place:
        a run dir exists complete or not at all. Returns (run dir, spec)."""
        d, out = self.fresh_dirs(run["run_id"])
        tmp = os.path.join(self.pod.out, ".new-%s-%d" % (run["run_id"], os.getpid()))
        try:
            os.makedirs(tmp)
            store.write_bytes(os.path.join(tmp, COMMAND_FILE), self.command_text(run, self.argv(run, out)).encode())
            spec = self.spec(run, d, out)
            store.write_json(os.path.join(tmp, SPEC_FILE), spec)
            os.rename(tmp, d)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return d, spec

    def run_one(self, run: dict) -> str:
        rid = run["run_id"]
        if self.should_skip(self.pod.run_dir(rid)):
            self.log("skip %s: its summary.json says ok (SWEEP_FORCE=1 reruns it)" % rid)
            return SUCCESS
        try:
            d, spec = self.prepare(run)
        except OSError as exc:
            why = "disk full" if store.is_disk_full(exc) else "cannot prepare it"
            self.stop_why = "%s: %s did not start (%s)" % (why, rid, exc.strerror or exc)
            self.log(self.stop_why)
            return FAILED
        self.log("start %s (seed %s, %d process(es))" % (rid, run.get("seed"), self.nproc))
        state = CODE_STATES.get(self.supervise(os.path.join(d, SPEC_FILE)))
        if state is None or not os.path.isfile(os.path.join(d, SUMMARY_FILE)):  # it died before recording the end
            st = store.load_or_note(spec["status"])[0] or {}
            st = supervisor.recover(d, st, float(spec["grace"]), spec.get("sync"))
            state = outcome.write_summary(d, st)["state"]
        self.log("end %s: %s" % (rid, state))
        return state

    # ---------------------------------------------------------------- the queue
    def run(self) -> None:
        self.start()
        queue = self.m["queue"]
        if self.nproc < 1:
            self.stop_why = "no GPU is visible (CUDA_VISIBLE_DEVICES, nvidia-smi, torch); set TRAIN_NPROC or CPU_ONLY=1"
            self.log(self.stop_why)
        self.log("sweep %s: %d run(s) queued" % (self.sid, len(queue)))
        for run in queue:
            if self.stop_why:
                break
            state = self.run_one(run)
            if state != SUCCESS and self.m.get("fail_fast") and not self.stop_why:
                self.stop_why = "fail-fast: %s ended %s" % (run["run_id"], state)
        self.finish()

    def finish(self) -> None:
        why = self.stop_why or "queue finished"
        final = QUEUE_STOPPED if why in STOP_REASONS.values() else QUEUE_COMPLETED
        store.update_json(self.pod.sweep_file, {"state": final, "reason": why, "ended_at": store.now_iso()},
                          keep_terminal=False)
        workflow.succeed(self.pod, "sweep.queue", "%s: %s" % (self.sid, why))
        self.log("sweep %s %s: %s" % (self.sid, final, why))
        store.release_reserve(all_of_them=True)


@command("sweep-run")
def sweep_run(pod, manifest: str) -> None:
    """Internal: the queue of one sweep (started by sweep-start in tmux)."""
    Scheduler(manifest).run()

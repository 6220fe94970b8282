"""The sweep queue: a Python scheduler started in the tmux `sweep` window as `agent sweep-run MANIFEST`.

The manifest JSON that sweep.start uploaded is its only input, plus the runs that sweep.add / sweep.retry
drop into `_manifests/<sweep>.inbox/` while it runs. It keeps a table of the pod's GPU slots (slots.py) and
starts runs in CSV order as soon as enough slots are free, each under its own supervisor process
(supervisor.py; forkrun.py: a fork of the queue, so no Python starts a run) with its own CUDA_VISIBLE_DEVICES and
rendezvous port (runs.py makes its files). A run whose ok summary has the same fingerprint is skipped. A run
that failed with a class in RETRY_ON is started again after a back-off, up to RUN_RETRIES times. It goes on
past failures unless fail_fast, stops cleanly on TERM (sweep.stop), and at the end records the sweep's end,
its totals and SWEEP_COMPLETED.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import select
import signal
import time

from . import cost, forkrun, launch, outcome, procs, runs, slots, store, supervisor, wire, workflow
from .queuelog import QueueLog
from .registry import command
from .rows import sweep_totals
from .states import (
    CODE_STATES,
    FAIL_NO_FIT,
    FAILED,
    INBOX,
    QUEUE_COMPLETED,
    QUEUE_STOPPED,
    SPEC_FILE,
    STATUS_FILE,
    SUCCESS,
    SUMMARY_FILE,
    SWEEP_RECORD,
    TRANSIENT,
    WITHDRAW_REQUEST,
    Layout,
)
from .sweepedit import read_inbox
from .wire import TYPE_CHECKING

if TYPE_CHECKING:
    from types import FrameType
    from typing import Any, Dict, List, Optional, Set, Tuple

    from .wire import ExecBlock, Json, Manifest, QueueEntry

    Place = Dict[str, Any]  # where a run runs: ids, devices, nproc, port, attempt, max_attempts, launcher

STOPPED_WHY = "stopped by sweep.stop"
STOP_REASONS: Dict[int, str] = {signal.SIGTERM: STOPPED_WHY, signal.SIGINT: "interrupted (SIGINT)",
                signal.SIGHUP: "its tmux session or server went away (SIGHUP)"}
MAX_BACKOFF = 600.0


class Running:
    __slots__ = ("dir", "fd", "place", "proc", "run", "spec")

    def __init__(self, run: QueueEntry, proc: forkrun.Forked, place: Place, run_dir: str, spec: Json) -> None:
        self.run, self.proc, self.place, self.dir, self.spec = run, proc, place, run_dir, spec
        self.fd: Optional[int] = None
        if hasattr(os, "pidfd_open"):
            try:
                self.fd = os.pidfd_open(proc.pid)  # novermin - guarded by hasattr (Python >= 3.9)
            except OSError:
                self.fd = None


class Scheduler:
    def __init__(self, manifest_path: str) -> None:
        from .sweeps import load_manifest

        m = load_manifest(manifest_path)
        self.m: Manifest = m
        self.ex: ExecBlock = m["exec"]
        self.sid = m["sweep_id"]
        self.pod = Layout.from_dict(m["pod"])
        self.log = QueueLog(os.path.join(self.pod.manifests, self.sid + ".log"))
        self.venv_python = os.path.join(self.ex["repo"], ".venv", "bin", "python")
        self.inbox = os.path.join(self.pod.manifests, self.sid + INBOX)
        self.stop_why = ""
        self.running: Dict[str, Running] = {}  # run_id -> Running
        # heap of (not_before, index, run): retries in their back-off
        self.waiting: List[Tuple[float, int, QueueEntry]] = []
        self.backoff: Set[str] = set()  # their run ids
        self.index = 0
        self.max_attempts = 1 + int(self.ex.get("retries") or 0)
        retry_on = self.ex.get("retry_on")
        self.retry_on = set(retry_on if retry_on is not None else TRANSIENT)
        self.slots: slots.Slots  # by start(): the pod's slots
        self.order: slots.Order
        self.stop_recorded = False
        self.devices_visible = True
        self.meter = cost.Meter(dict(m.get("billing") or {}))  # the pod's price, the budget, the queue's spans
        self.held = slots.Held(procs.gpus_in_use, self.log, time.monotonic)  # GPUs outside processes hold

    # ---------------------------------------------------------------- signals
    def on_term(self, signum: int, _frame: Optional[FrameType]) -> None:
        self.stop_why = self.stop_why or STOP_REASONS.get(signum, STOPPED_WHY)
        for r in list(self.running.values()):
            if r.proc.poll() is None:
                r.proc.send_signal(signal.SIGTERM)

    def device_ids(self) -> List[str]:
        """The slot table's ids: WF_FAKE_GPUS pretend slots, one slot on a CPU target, else the pod's GPUs."""
        ex = self.ex
        fake = ex.get("fake_gpus")
        if fake:
            return [str(i) for i in range(int(fake))]
        if ex.get("cpu_only"):
            self.devices_visible = False  # nothing to hand out: CUDA_VISIBLE_DEVICES is left alone
            return ["cpu"]
        self.held.active = True  # the pod's own GPUs: a process outside the sweep may hold some (nvidia-smi)
        from .facts import pod_gpu_ids  # only on a GPU pod without WF_FAKE_GPUS: facts imports a lot

        return pod_gpu_ids(launch.env_value(self.pod.env_path, "CUDA_VISIBLE_DEVICES"), self.venv_python)

    def start(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self.on_term)
        procs.become_subreaper()  # orphans of a killed supervisor come here, and are ended by their mark
        store.hold_reserve(self.pod.control)  # room to record the sweep's end on a full disk
        me = os.getpid()
        self.slots = slots.Slots(self.device_ids())
        self.order = slots.Order(self.slots.total, max(1, self.slots.total))
        spans = self.meter.open(store.load_or_note(self.pod.sweep_file)[0] or {}, self.log.fh.name, self.pod.sweep_file)
        store.update_json(self.pod.sweep_file, {"pid": me, "pid_start": procs.proc_start(me),
                                                "boot_id": procs.boot_id(), "slots": self.slots.ids,
                                                "git_sha": self.m.get("git_sha"), "billing": self.meter.billing,
                                                "spans": spans}, keep_terminal=False)

    # ---------------------------------------------------------------- the order
    def enqueue(self, run: QueueEntry) -> None:
        self.index += 1
        run["_index"] = self.index
        run.setdefault("attempt", 1)
        total = self.slots.total
        self.order.push(self.index, slots.need_of(run.get("gpus"), total) if total else 1, run)

    def inbox_files(self) -> List[str]:
        try:
            return sorted(os.path.join(self.inbox, n) for n in os.listdir(self.inbox) if n.endswith(".json"))
        except OSError:
            return []

    def take_inbox(self) -> int:
        """Runs that sweep.add / sweep.retry dropped in the inbox: onto the end of the order. A stopping queue
        leaves them there (finish() says so); an entry without a run id and config is logged and dropped."""
        if self.stop_why:
            return 0
        count = 0
        for path in self.inbox_files():
            entries, faults = read_inbox(path)
            for line in faults:
                self.log("inbox: " + line)
            count += sum(self.admit(run) for run in entries)
            os.unlink(path)
        if count:
            self.log("%d run(s) added to the queue" % count)
        return count

    def admit(self, run: QueueEntry) -> int:
        """One inbox entry into the order, one copy of a run at a time: a copy of a run running or in its back-off
        is dropped (logged); one waiting in the order is replaced by it, at its place; any other goes at the end."""
        rid = run["run_id"]
        if rid in self.running or rid in self.backoff:
            self.log("inbox: %s is running or waits for its retry; this copy of it was dropped" % rid)
            return 0
        if self.order.replace(run):
            self.log("inbox: %s was waiting in the queue; this copy replaces it there" % rid)
        else:
            self.enqueue(run)
        return 1

    def take_withdrawals(self) -> None:
        """sweep-withdraw's requests in the inbox (fleet.py answers them): waiting runs leave the order."""
        try:
            names = sorted(n for n in os.listdir(self.inbox) if n.endswith(WITHDRAW_REQUEST))
        except OSError:
            return
        if names:
            from .fleet import answer_withdrawal

            with store.locked(self.inbox):  # the asking command checks, under it, whether it was answered
                for name in names:
                    answer_withdrawal(self, os.path.join(self.inbox, name))

    def release_due(self) -> None:
        now = time.time()
        while self.waiting and self.waiting[0][0] <= now:
            _, _, run = heapq.heappop(self.waiting)
            self.backoff.discard(run["run_id"])
            self.order.push(run["_index"], slots.need_of(run.get("gpus"), self.slots.total), run)

    def fill(self) -> None:
        """Start every run the free slots allow, in the order's policy (slots.py)."""
        self.release_due()
        for too_big in self.order.pop_too_big():
            self.no_fit(too_big)
        with self.slots.without(self.held.held(self.slots.free, len(self.order))):  # held outside the sweep
            while not self.stop_why:
                run = self.order.pop_fitting(len(self.slots.free))
                if run is None:
                    return
                if run["attempt"] == 1 and not run.get("_again") and self.skipped(run):
                    continue
                self.launch(run)

    # ---------------------------------------------------------------- one run
    def skipped(self, run: QueueEntry) -> bool:
        rid = run["run_id"]
        summ, _ = store.load_or_note(os.path.join(self.pod.run_dir(rid), SUMMARY_FILE))
        skip, why = outcome.skip_reason(run, summ, bool(self.m.get("force")))
        if skip:
            self.log("skip %s: %s" % (rid, why))
        elif why:
            self.log("rerun %s: %s" % (rid, why))
            run["rerun_why"] = "rerun: " + why
        return skip

    def place(self, run: QueueEntry) -> Place:
        need = slots.need_of(run.get("gpus"), self.slots.total)
        nproc = 1 if self.ex.get("launcher") == "python" else int(self.ex.get("nproc") or need)
        taken = {r.place.get("port") for r in self.running.values()}
        node = run.get("node")  # one node of a multi-node run: its endpoint's port, and no retry (runs.node_note)
        port = runs.node_port(node) if node else slots.pick_port(int(self.ex.get("rdzv_base_port") or 29500), taken)
        ids = self.slots.take(need)
        return {"ids": ids, "devices": ",".join(ids) if self.devices_visible else None, "nproc": nproc,
                "slots_total": self.slots.total, "pod": self.meter.billing.get("pod"),
                "price_per_hour": self.meter.billing.get("price_per_hour"),
                "port": port, "attempt": run["attempt"], "launcher": runs.launcher_of(self.ex, nproc, node),
                "max_attempts": 1 if node else max(self.max_attempts, run["attempt"]),  # sweep.retry may go past it
                "again": run.pop("_again", None)}

    def launch(self, run: QueueEntry) -> None:
        rid = run["run_id"]
        if rid in self.running:  # never two copies of one run: its slots and its end stay with the one running
            self.log("not started: %s is running already (one copy of a run at a time)" % rid)
            return
        where: Place = {"ids": []}
        try:
            where = self.place(run)
            d, spec = runs.build(self.pod, self.ex, self.sid, run, where, self.venv_python, self.m.get("git_sha"),
                                 self.log)
            spec_path = os.path.join(d, SPEC_FILE)
        except OSError as exc:
            self.slots.give(where["ids"])
            why = "disk full" if store.is_disk_full(exc) else "cannot prepare it"
            self.stop("%s: %s did not start (%s)" % (why, rid, exc.strerror or exc))
            self.log(self.stop_why)
            return
        env = dict(os.environ)
        if self.ex.get("cpu_only"):
            env.setdefault("GLOO_SOCKET_IFNAME", "lo")
        proc = forkrun.fork_run(spec_path, env)
        self.running[rid] = Running(run, proc, where, d, spec)
        self.log("start %s (attempt %d/%d, seed %s, %d process(es)%s)" % (
            rid, run["attempt"], where["max_attempts"], run.get("seed"), where["nproc"],
            ", GPUs " + where["devices"] if where["devices"] is not None else ""))
        if run.get("node"):
            self.log(runs.node_note(run))
        if self.stop_why:  # a stop that came while it was starting
            proc.send_signal(signal.SIGTERM)

    def no_fit(self, run: QueueEntry) -> None:
        """A run that asks more slots than the pod has: recorded failed (class no_fit), never started."""
        rid, d = run["run_id"], self.pod.run_dir(run["run_id"])
        why = "asks for %s GPU(s); the pod has %d slot(s)" % (run.get("gpus"), self.slots.total)
        runs.keep_previous(self.pod, rid, int(self.ex.get("keep_previous", 3)), self.log)
        st = {"run_id": rid, "sweep_id": self.sid, "config": run["config"], "seed": run.get("seed"),
              "state": FAILED, "reason": why, "failure_class": FAIL_NO_FIT, "started_at": store.now_iso(),
              "ended_at": store.now_iso(), "duration_secs": 0.0, "fingerprint": run.get("fp")}
        store.write_json(os.path.join(d, STATUS_FILE), st)
        outcome.write_summary(d, st)
        self.log("end %s: %s (%s)" % (rid, FAILED, why))
        self.fail_fast(rid, FAILED)

    def ended_state(self, r: Running) -> str:
        code = r.proc.returncode
        state = CODE_STATES.get(code) if code is not None else None
        if state is None or not os.path.isfile(os.path.join(r.dir, SUMMARY_FILE)):  # died before recording the end
            st = store.load_or_note(r.spec["status"])[0] or {}
            st = supervisor.recover(r.dir, st, float(r.spec["grace"]), r.spec.get("sync"))
            state = outcome.write_summary(r.dir, st)["state"]
        return state

    def after(self, r: Running) -> None:
        """A run's supervisor ended: free its slots, then retry it or record its end."""
        rid, run = r.run["run_id"], r.run
        if r.fd is not None:
            os.close(r.fd)
        del self.running[rid]
        self.slots.give(r.place["ids"])
        state = self.ended_state(r)
        summ: Json = store.load_or_note(os.path.join(r.dir, SUMMARY_FILE))[0] or {}
        cls: Optional[str] = summ.get("failure_class")
        most = r.place["max_attempts"]
        self.log("end %s: %s%s (attempt %d/%d)" % (rid, state, " (%s)" % cls if cls else "", run["attempt"], most))
        if state != SUCCESS and not self.stop_why and runs.port_taken(run, r.dir, r.place, self.log):
            self.order.push(run["_index"], slots.need_of(run.get("gpus"), self.slots.total), run)  # at its place
            return
        if state != SUCCESS and cls in self.retry_on and run["attempt"] < most and not self.stop_why:
            self.retry_later(r, cls)
            return
        self.fail_fast(rid, state)

    def retry_later(self, r: Running, cls: Optional[str]) -> None:
        run = r.run
        delay = min(MAX_BACKOFF, float(self.ex.get("retry_backoff_secs") or 0) * 2 ** (run["attempt"] - 1))
        self.backoff.add(run["run_id"])
        at = time.time() + delay
        store.update_json(r.spec["status"], {"retry_at": store.iso_of(at), "retry": "%d/%d" % (
            run["attempt"] + 1, self.max_attempts)})
        self.log("retry %s: attempt %d/%d in %ds (it ended %s)" % (run["run_id"], run["attempt"] + 1,
                                                                   self.max_attempts, delay, cls))
        run["attempt"] += 1
        heapq.heappush(self.waiting, (at, run["_index"], run))

    def fail_fast(self, rid: str, state: str) -> None:
        if state != SUCCESS and self.m.get("fail_fast") and not self.stop_why:  # runs already running finish
            self.stop("fail-fast: %s ended %s" % (rid, state))

    def stop(self, why: str = "") -> None:
        """Start no new run; record it in sweep.json, so that sweep.add refuses instead of queueing runs that
        would never start. (The signal handler only sets stop_why; the main loop records it.)"""
        self.stop_why = self.stop_why or why
        if not self.stop_recorded:
            self.stop_recorded = True
            store.update_json(self.pod.sweep_file, {"stopping": self.stop_why})

    # ---------------------------------------------------------------- the queue
    def wait(self) -> None:
        """Sleep until a run ends, a retry is due, or a second passes (the inbox is read every second)."""
        timeout = 1.0
        if self.waiting:
            timeout = max(0.0, min(timeout, self.waiting[0][0] - time.time()))
        fds = [r.fd for r in self.running.values() if r.fd is not None]
        if fds and len(fds) == len(self.running):
            select.select(fds, [], [], timeout)
        else:
            time.sleep(min(timeout, 0.2))
        for r in [r for r in self.running.values() if r.proc.poll() is not None]:
            self.after(r)

    def idle(self) -> bool:
        return not self.running and (bool(self.stop_why) or (not len(self.order) and not self.waiting))

    def run(self) -> None:
        self.start()
        for run in self.m["start"] if "start" in self.m else self.m["queue"]:  # "start": a resumed sweep's runs
            self.enqueue(run)
        self.log("sweep %s: %d run(s) queued on %d GPU slot(s)" % (self.sid, len(self.order), self.slots.total))
        if self.slots.total < 1:
            self.stop_why = ("no GPU is visible (CUDA_VISIBLE_DEVICES, nvidia-smi, torch); "
                             "set CPU_ONLY=1 or WF_FAKE_GPUS")
            self.log(self.stop_why)
        while True:
            self.take_inbox()
            self.take_withdrawals()
            if not self.stop_why and self.meter.over_budget():  # SWEEP_BUDGET_USD: runs running finish, no more
                self.stop(self.meter.over_budget())
                self.log(self.stop_why)
            if self.stop_why:
                self.stop()
            else:
                self.fill()
            if self.idle():
                with store.locked(self.inbox):  # the manifests dir; sweep.add holds it too: no run lands unseen
                    if self.stop_why or not self.take_inbox():
                        self.finish()
                        return
                continue
            self.wait()

    def finish(self) -> None:
        why = self.stop_why or "queue finished"
        final = QUEUE_STOPPED if why in STOP_REASONS.values() or self.meter.hit else QUEUE_COMPLETED
        totals = sweep_totals(self.pod, self.sid, final, self.meter.billing, self.log)
        record = store.update_json(self.pod.sweep_file, {"state": final, "reason": why, "ended_at": store.now_iso(),
                                                         "totals": totals, "spans": self.meter.close()},
                                   keep_terminal=False)
        store.write_json(os.path.join(self.pod.manifests, self.sid + SWEEP_RECORD), record)
        for path in self.inbox_files():  # added while the queue was stopping: never started, and the log says so
            self.log("not started, added while the queue was stopping: %s (sweep.add or sweep.retry them again)"
                     % ", ".join(r["run_id"] for r in read_inbox(path)[0]))
            os.unlink(path)
        with contextlib.suppress(OSError):
            os.rmdir(self.inbox)  # empty by now; sweep.add makes it again if the sweep resumes
        workflow.succeed(self.pod, "sweep.queue", "%s: %s" % (self.sid, why))
        self.log("sweep %s %s: %s" % (self.sid, final, why))
        store.release_reserve(all_of_them=True)


@command(wire.SWEEP_RUN)
def sweep_run(pod: Layout, manifest: str) -> None:
    """Internal: the queue of one sweep (started by sweep-start in tmux)."""
    Scheduler(manifest).run()

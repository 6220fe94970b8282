"""Process ownership and liveness on the pod.

A run or task owns every process it starts, whatever session or process group the process moved to
(torchrun starts its workers with start_new_session). Its supervisor is a child subreaper
(PR_SET_CHILD_SUBREAPER), so orphans of the tree are re-parented to it instead of to init, and every process
of the tree carries `WFOPS_OWNER=<token>` in its environment. `end_tree` ends all of them: TERM, a grace
period, then KILL, and returns only when the last one is gone. Liveness of a recorded runner is judged by
pid + start time + boot id, so a reused pid or a reboot never reads as "still running".
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time

from .states import LOST, OWNER_ENV, QUEUE_NONE, RUNNING, TERMINAL, UNKNOWN
from .wire import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any, Container, Dict, Iterable, Iterator, List, Optional, Set, Tuple

    from .wire import Json

PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36


DEFERRED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Ctrl-C, TERM and HUP wait until the block is done (then they act as usual): a command's all-or-nothing
    step is not cut in half. Python handlers, not a blocked mask or SIG_IGN: children started in the block
    (the queue's tmux) inherit neither."""
    got: List[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: got.append(signum)) for sig in DEFERRED}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if got:
            os.kill(os.getpid(), got[0])


def boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def _stat_fields(pid: int) -> Optional[List[bytes]]:
    try:
        with open("/proc/%d/stat" % pid, "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    return data[data.rfind(b")") + 2:].split()


def proc_start(pid: int) -> Optional[int]:
    """Start time of a live process in clock ticks since boot, or None (gone, or a zombie)."""
    fields = _stat_fields(pid)
    try:
        if not fields or fields[0] == b"Z":
            return None
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def pid_alive(pid: Any, start: Optional[int]) -> bool:
    if not pid:
        return False
    got = proc_start(int(pid))
    return got is not None and (start is None or got == start)


def liveness(st: Optional[Json], current_boot: Optional[str] = None) -> Tuple[str, str]:
    """(state, reason) of a status record: a non-terminal state whose runner is gone is reported `lost`."""
    if not st:
        return "missing", ""
    state = st.get("state", UNKNOWN)
    if state in TERMINAL or state == UNKNOWN:
        return state, st.get("reason", "")
    current_boot = boot_id() if current_boot is None else current_boot
    if st.get("boot_id") and current_boot and st["boot_id"] != current_boot:
        return LOST, "the pod rebooted after this started"
    pid = st.get("pid")
    if pid and not pid_alive(pid, st.get("pid_start")):
        return LOST, "its runner (pid %s) is gone without recording an end" % pid
    if not pid and state == RUNNING:
        return LOST, "no runner pid recorded"
    return state, st.get("reason", "")


def queue_liveness(sw: Optional[Json]) -> Tuple[str, str]:
    """(state, reason) of a sweep queue record (_control/sweep.json)."""
    if not sw:
        return QUEUE_NONE, ""
    if sw.get("state") != RUNNING:
        return sw.get("state", UNKNOWN), sw.get("reason", "")
    state, reason = liveness(sw)
    if state == LOST and sw.get("pid") and "rebooted" not in reason:
        reason = "the queue runner (pid %s) is gone" % sw["pid"]
    elif state == LOST and "rebooted" in reason:
        reason = "the pod rebooted during the sweep"
    return state, reason


def wait_for_exit(pid: int, timeout: float) -> str:
    """Block until `pid` exits or `timeout` passes; event-driven where pidfd_open exists. Returns how it
    waited ("pidfd" or "poll"), which the tests use to prove the event path was taken."""
    timeout = max(0.0, timeout)
    if pid and hasattr(os, "pidfd_open"):
        try:
            fd = os.pidfd_open(int(pid))  # novermin - guarded by hasattr above (Python >= 3.9)
        except ProcessLookupError:
            return "pidfd"
        except OSError:  # an old kernel (ENOSYS) or no descriptors left: poll instead
            time.sleep(min(timeout, 0.05))
            return "poll"
        try:
            select.select([fd], [], [], timeout)
        finally:
            os.close(fd)
        return "pidfd"
    time.sleep(min(timeout, 0.1))
    return "poll"


def _prctl(option: int, arg: int) -> bool:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(option, arg, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def become_subreaper() -> bool:
    """Orphans of our descendants come to us, not to init (Linux >= 3.4; works unprivileged in containers)."""
    return _prctl(PR_SET_CHILD_SUBREAPER, 1)


def die_with_parent(sig: int) -> None:
    """Ask Linux to send us `sig` when our parent (tmux, or the sweep queue) dies."""
    _prctl(PR_SET_PDEATHSIG, int(sig))


def _parents() -> Dict[int, int]:
    """{pid: ppid} of every live, non-zombie process."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        fields = _stat_fields(int(name))
        if fields and fields[0] != b"Z":
            try:
                out[int(name)] = int(fields[1])
            except (IndexError, ValueError):
                pass
    return out


def _has_marker(pid: int, marker: bytes) -> bool:
    try:
        with open("/proc/%d/environ" % pid, "rb") as fh:
            return marker in fh.read().split(b"\0")
    except OSError:
        return False


def owned(root: int, token: str = "") -> Set[int]:
    """Live processes of a tree: descendants of `root`, plus any process whose environment carries
    WFOPS_OWNER=`token` (one that escaped the tree, e.g. after its supervisor was killed)."""
    parents = _parents()
    children: Dict[int, List[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), list(children.get(root, []))  # type: Set[int], List[int]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    if token:
        marker = ("%s=%s" % (OWNER_ENV, token)).encode()
        found.update(pid for pid in parents if pid not in found and _has_marker(pid, marker))
    found.discard(os.getpid())
    found.discard(root)
    return found


def reap(keep: Container[int] = ()) -> None:
    """Collect ended children of ours (orphans re-parented to this subreaper included), except `keep`
    (a child whose status subprocess.Popen still has to collect)."""
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in keep:
            continue
        fields = _stat_fields(int(name))
        try:
            if fields and fields[0] == b"Z" and int(fields[1]) == me:
                os.waitpid(int(name), os.WNOHANG)
        except (IndexError, ValueError, ChildProcessError):
            pass


def _signal_all(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def end_tree(root: int, token: str, grace: float, keep: Container[int] = ()) -> List[int]:
    """TERM every process `root` owns, KILL what is left after `grace` seconds, and return only when none is
    left (at most 10 s after the KILL). `keep`: children not to reap here. Returns every pid it ended."""
    pids = owned(root, token)
    seen = set(pids)
    _signal_all(pids, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while pids and time.monotonic() < deadline:
        time.sleep(0.05)
        reap(keep)
        pids = owned(root, token)
        _signal_all(pids - seen, signal.SIGTERM)  # newcomers (forked while we waited) get the same request
        seen |= pids
    deadline = time.monotonic() + 10
    while pids and time.monotonic() < deadline:
        _signal_all(pids, signal.SIGKILL)
        time.sleep(0.02)
        reap(keep)
        pids = owned(root, token)
        seen |= pids
    return sorted(seen)


def gpu_holders(timeout: float = 20) -> List[Any]:
    """Processes holding GPU memory now, from nvidia-smi ([] where there is none or no GPU)."""
    import shutil
    import subprocess

    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        p = subprocess.run([smi, "--query-compute-apps=pid,process_name,used_memory", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if p.returncode != 0:
        return []
    out = []
    for line in p.stdout.splitlines():
        parts = [x.strip() for x in line.split(",")]
        if len(parts) >= 3 and parts[0].isdigit():
            out.append({"pid": int(parts[0]), "name": parts[1], "used_memory": parts[2]})
    return out


def gpus_in_use(timeout: float = 20) -> Set[str]:
    """GPUs a compute process holds now (nvidia-smi --query-compute-apps), each by its index and by its UUID, so
    that either form of a CUDA_VISIBLE_DEVICES id matches; empty where there is no nvidia-smi or it fails."""
    import shutil
    import subprocess

    smi = shutil.which("nvidia-smi")
    if not smi:
        return set()

    def query(what: str) -> List[List[str]]:
        try:
            p = subprocess.run([smi, what, "--format=csv,noheader,nounits"], capture_output=True, text=True,
                               timeout=timeout, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired):
            return []
        rows = [[x.strip() for x in ln.split(",")] for ln in p.stdout.splitlines() if "," in ln]
        return rows if p.returncode == 0 else []

    busy = {row[0] for row in query("--query-compute-apps=gpu_uuid,pid") if row[0].startswith("GPU-")}
    index_of = {row[1]: row[0] for row in query("--query-gpu=index,uuid") if len(row) > 1}
    return busy | {index_of[u] for u in busy if u in index_of}


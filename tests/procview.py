"""What a process is waiting on, seen from outside it (/proc): the tests prove how a waiter waits with these, not
with the waiter's own report."""

from __future__ import annotations

import fcntl
import os
import re
from pathlib import Path

SELECT_WCHANS = ("poll_schedule_timeout", "do_select", "do_sys_poll")
SELECT_SYSCALLS = ("23", "270")  # x86_64 select, pselect6 (/proc/PID/syscall's first field)


def blocked_in_select(pid: int | str) -> bool:
    """The process sleeps in select()/poll() (its kernel wait channel says so)."""
    try:
        return Path(f"/proc/{pid}/wchan").read_text().startswith(SELECT_WCHANS)
    except OSError:
        return False


def pidfds(pid: int | str) -> dict[int, int]:
    """The process's pidfds: {its fd: the pid that fd refers to} (/proc/PID/fd, /proc/PID/fdinfo)."""
    found = {}
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            if os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:[pidfd]":
                info = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
                match = re.search(r"^Pid:\s*(-?\d+)", info, re.M)
                if match:
                    found[int(fd)] = int(match.group(1))
    except OSError:
        return {}
    return found


def waits_on_pidfd_of(pid: int | str, target: int) -> bool:
    """The process is blocked in select() on a pidfd of `target`: it holds a pidfd of `target` (fdinfo), it sleeps
    in select (wchan), and the select it sleeps in (/proc/PID/syscall) has nfds = that pidfd + 1 (its first
    argument): it watches no fd above it."""
    fds = [fd for fd, of in pidfds(pid).items() if of == target]
    try:
        call = Path(f"/proc/{pid}/syscall").read_text().split()
    except OSError:
        return False
    return (bool(fds) and blocked_in_select(pid) and len(call) > 1 and call[0] in SELECT_SYSCALLS
            and int(call[1], 16) == max(fds) + 1)


def keeper_pids(dirs: list[str | os.PathLike[str]], *, inside: bool = True) -> list[int]:
    """Pids of the warm keepers (`python -m wfops.transport.keeper`) whose command line names a socket in one of
    `dirs` (`inside`: below the dir; else any argument starting with it), found by their /proc command lines."""
    prefixes = [os.fsencode(d) + (b"/" if inside else b"") for d in dirs]
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"wfops.transport.keeper" in argv and any(a.startswith(d) for a in argv for d in prefixes):
            found.append(int(entry.name))
    return found


def is_flocked(path: Path, *, create: bool = False) -> bool:
    """Whether another process holds an flock on `path` (a non-blocking try that lets go at once); `create`: an
    absent file is made (and so is not locked) rather than an error."""
    fd = os.open(path, os.O_RDONLY | (os.O_CREAT if create else 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def tcp_connections_to(pid: int | str, port: int, established: bool = True) -> int:
    """How many established TCP connections the process holds to `port` on loopback (its socket fds matched with
    /proc/net/tcp and tcp6 by inode); `established=False`: its sockets to it in any state (one the peer closed
    counts until the process itself closes it)."""
    try:
        inodes = {link[len("socket:["):-1] for fd in os.listdir(f"/proc/{pid}/fd")
                  if (link := os.readlink(f"/proc/{pid}/fd/{fd}")).startswith("socket:[")}
    except OSError:
        return 0
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()  # sl local rem st ... inode (the 10th)
            if (fields[3] == "01" or not established) and int(fields[2].rsplit(":", 1)[1], 16) == port \
                    and fields[9] in inodes:
                count += 1
    return count

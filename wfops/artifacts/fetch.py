"""Receiving run directories: only the files that are new or changed, in one tar stream, placed file by file.

The client sends what it has of each run (size and mtime per file, or size and sha256 with `--hash`); the pod
agent (wfops/agent/fetching.py) lists what differs and the pod's `tar c` streams those files into the SSH
channel. This side pipes the stream into an extractor process (`python -m wfops.artifacts.fetch STAGING DEST RUN_ID...`)
that unpacks member by member with tarfile's `data` filter (no absolute paths, no `..`, no links), refuses
anything outside the requested runs, and moves each complete file into place (one rename, with the pod's
mtime): a fetch that is interrupted keeps every file it finished, and the next fetch sends only the rest.
A separate process, because paramiko's reader and the extraction both need Python time.

A file removed on the pod since it was fetched stays here (the local copy is an archive): the fetch names it.
A run replaced on the pod since (a rerun: another generation, see wfops/agent/fetching.py) never lands in the old
copy: when its generation file arrives (first of its files) and differs from the local one, the local folder moves
aside to RUN_ID.replaced-<UTC time> and the new run starts in a fresh one (unless run.fetch --merge-replaced).

A file in flight lives in a staging folder (`.incoming-<pid>-<ns>`), removed on every exit path Python sees
(errors, Ctrl-C, SIGTERM: the task boundary turns it into an exception). A fetch killed outright (SIGKILL, a
crash) cannot clean up, so each fetch holds an flock on its staging folder — the extractor inherits it — and
the next fetch removes every staging folder whose lock it can take: the kernel released it, so its owners are
gone. A concurrent fetch still holds its lock, and its folder is left alone.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from wfops.agent.states import GENERATION_FILE
from wfops.artifacts.staging import claim_staging, remove_abandoned_staging, remove_tree
from wfops.errors import RemoteError

READ_SIZE = 1024 * 1024
PROGRESS_MIN_BYTES = 20 * 1024 * 1024
PROGRESS_EVERY_SECS = 1.0  # on a terminal (redrawn in place); every 2 s otherwise


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


class TarReceiver:
    """A stdout sink for the remote `tar c`; call `finish()` after the command ended, `abort()` on failure."""

    def __init__(self, dest_root: Path, expected: set[str] | None = None, progress: bool = True,
                 merge_replaced: bool = False) -> None:
        self.dest_root = dest_root
        self.received = 0
        self.total: int | None = None
        self.plan: dict[str, Any] = {}  # the pod's `@wfops-plan` line: {"files": N, "runs": [...]}
        self.changed = False  # the pod's `@wfops-changed`: a file changed while tar read it
        self.files = 0
        self.started = time.time()
        self.show_progress = progress
        self.done = threading.Event()
        try:  # refused up front when it can be seen (index.refuse_unusable); root, /proc/x, a full disk: here
            dest_root.mkdir(parents=True, exist_ok=True)
            remove_abandoned_staging(dest_root)
            self.staging, self.lock_fd = claim_staging(dest_root)
        except OSError as exc:
            from wfops.artifacts.index import unusable

            raise unusable(dest_root, f"cannot be made or used ({exc.strerror or exc})") from None
        self.aside: list[tuple[str, Path]] = []  # (run, where its replaced local copy went)
        self.argv = [sys.executable, "-m", "wfops.artifacts.fetch", *(["--merge-replaced"] if merge_replaced else []),
                     str(self.staging), str(dest_root), *sorted(expected or ())]
        self.proc: subprocess.Popen[bytes] | None = None  # started when there is something to unpack (`start`)
        self.start_lock = threading.Lock()
        self.extractor_gone = False
        self.rfd, self.wfd = os.pipe()  # the stream: written here (or by the keeper, `direct`), read by the extractor
        try:  # a 1 MiB pipe lets the channel reader run ahead of the extractor (Linux; best effort)
            fcntl.fcntl(self.wfd, 1031, READ_SIZE)  # F_SETPIPE_SZ
        except OSError:
            pass
        self.progress_thread: threading.Thread | None = None  # started with the extractor: nothing to copy, none

    def start(self) -> None:
        """Start the extractor (once): when the pod's plan says files follow, or the stream's first bytes come. A
        fetch with nothing to send never pays for it."""
        with self.start_lock:
            if self.proc is not None or self.rfd < 0:
                return
            try:  # the extractor inherits the lock: the folder counts as in use until it has exited too
                self.proc = subprocess.Popen(self.argv, stdin=self.rfd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                             pass_fds=(self.lock_fd,))
            finally:
                os.close(self.rfd)
                self.rfd = -1
            if not self.done.is_set():
                self.progress_thread = threading.Thread(target=self._progress, daemon=True)
                self.progress_thread.start()

    def __call__(self, chunk: bytes) -> None:
        self.received += len(chunk)
        if self.extractor_gone:
            return  # it refused the stream; keep draining the channel so the pod's tar can end
        self.start()
        view = memoryview(chunk)
        try:
            while view:
                view = view[os.write(self.wfd, view):]
        except (OSError, ValueError):  # it exited, or abort() closed the pipe under this (reader) thread
            self.extractor_gone = True

    def direct(self) -> tuple[int, Callable[[int], None]]:
        """For a keeper session: the stream's pipe, which the keeper writes into itself (one copy less)."""
        return self.wfd, self._count

    def _count(self, n: int) -> None:
        self.start()  # the plan said so already (stderr); this is the fallback
        self.received += n

    def meta(self, name: str, value: str) -> None:
        if name == "size" and value.isdigit():
            self.total = int(value)
        elif name == "changed":
            self.changed = True
        elif name == "plan":
            try:
                self.plan = json.loads(value)
            except ValueError:
                return
            if self.plan.get("files"):
                self.start()

    def _progress(self) -> None:
        last = 0.0
        tty = sys.stderr.isatty()
        while not self.done.wait(PROGRESS_EVERY_SECS):
            if not self.show_progress or (self.total or 0) < PROGRESS_MIN_BYTES:
                continue
            now = time.time()
            if not tty and now - last < 2 * PROGRESS_EVERY_SECS:
                continue
            last = now
            rate = self.received / max(now - self.started, 1e-6)
            pct = f" ({100 * self.received / self.total:.0f}%)" if self.total else ""
            end = "\r" if tty else "\n"
            sys.stderr.write(f"wfops: fetching {_mb(self.received)} of {_mb(self.total or 0)}{pct}, "
                             f"{_mb(rate)}/s{end}")
            sys.stderr.flush()
        if tty and self.show_progress and (self.total or 0) >= PROGRESS_MIN_BYTES:
            sys.stderr.write("\n")

    def _close_stream(self) -> None:
        for name in ("wfd", "rfd"):
            fd = getattr(self, name)
            if fd >= 0:
                setattr(self, name, -1)
                os.close(fd)

    def _end_extractor(self) -> tuple[int, str, str]:
        self._close_stream()  # the end of the stream (a keeper writing into it has closed its copy already)
        if self.proc is None:
            out, err, code = b"0", b"", 0
        else:
            out, err = self.proc.communicate()
            code = self.proc.returncode
        self.done.set()
        if self.progress_thread is not None:
            self.progress_thread.join()
        return code, out.decode(errors="replace"), err.decode(errors="replace")

    def abort(self) -> None:
        """Stop now: the extractor is killed (not drained), and everything this fetch staged is removed. `aside`:
        the local copies it moved aside before that (the caller says where they went)."""
        self.extractor_gone = True
        with self.start_lock:
            if self.proc is not None:
                self.proc.kill()
            self._close_stream()
        try:
            self.aside = _moved_aside(self._end_extractor()[1])
        finally:
            self._discard()

    def finish(self) -> list[Path]:
        """Wait for the extraction (every file is in place by then); return the run dirs of the plan."""
        try:
            code, out, err = self._end_extractor()
            self.aside = _moved_aside(out)  # a failed extraction may have moved a copy aside before: said all the same
            if code != 0:
                lines = [ln for ln in err.splitlines() if ln.strip()]
                raise RemoteError(lines[-1] if lines else f"the run data could not be unpacked (exit {code})")
            self.files = int((out.strip().splitlines() or ["0"])[-1])
            return [self.dest_root / run for run in self.plan.get("runs") or []]
        finally:
            self._discard()

    def _discard(self) -> None:
        """Remove the staging folder (only files still in flight are there), then unlock."""
        if self.lock_fd < 0:
            return
        try:
            remove_tree(self.staging)
        finally:
            os.close(self.lock_fd)
            self.lock_fd = -1


def _moved_aside(out: str) -> list[tuple[str, Path]]:
    """The extractor's `RUN<TAB>WHERE` lines (one per local copy moved aside, written as it moved; a count ends a
    complete extraction)."""
    return [(run, Path(where)) for run, tab, where in (ln.partition("\t") for ln in out.splitlines()) if tab]


class _Peeked(io.BufferedIOBase):
    """A stream with its first bytes read already (to tell an empty stream: nothing changed, nothing sent).
    Read-only and not seekable: tarfile's stream mode ("r|") only ever calls read()."""

    def __init__(self, stream: BinaryIO, head: bytes) -> None:
        super().__init__()
        self.stream, self.head = stream, head

    def readable(self) -> bool:
        return True

    def read(self, n: int | None = -1, /) -> bytes:
        if n is None:
            n = -1
        if not self.head:
            return self.stream.read(n)
        if 0 <= n < len(self.head):
            data, self.head = self.head[:n], self.head[n:]
            return data
        data, self.head = self.head, b""
        return data


def _place(staging: Path, dest: Path, name: str) -> None:
    """Move one complete file from staging into place, never through a link: a run folder here that is one is
    refused (run.fetch --all: the pod named it a run of the sweep; RUN_ID was refused up front), as is a link out
    of `dest` deeper down."""
    target = dest / name
    top = dest / name.split("/", 1)[0]
    if os.path.islink(top):
        from wfops.artifacts.index import linked_run

        raise RemoteError(linked_run(top) + "; the files of this fetch before it are in place")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file (or a dead link) where a folder of the run goes: the user's to move
        raise RemoteError(f"cannot make the folder {target.parent} here ({exc.strerror or exc}): a file of that name "
                          "is in the way; move it away and fetch again") from None
    if not os.path.realpath(target.parent).startswith(os.path.realpath(dest) + os.sep):
        raise RemoteError(f"{target.parent} leads out of {dest}; fetch aborted")
    try:
        os.replace(staging / name, target)
    except OSError as exc:
        raise RemoteError(f"cannot put {target} in place: {exc.strerror or exc}") from None


def _set_aside(staging: Path, dest: Path, run: str) -> Path | None:
    """Before a run's new generation file lands: move a local copy of another generation aside (returns where)."""
    old, mark = dest / run, Path(run, GENERATION_FILE)
    try:
        if not any(old.iterdir()) or (dest / mark).read_bytes() == (staging / mark).read_bytes():
            return None
    except (FileNotFoundError, NotADirectoryError):  # no local copy, or one without a generation (another one)
        if not old.is_dir() or not any(old.iterdir()):
            return None
    aside = dest / f"{run}.replaced-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    while aside.exists():
        aside = aside.with_name(aside.name + "-1")
    os.rename(old, aside)
    return aside


def extract(stream: BinaryIO, staging: Path, dest: Path, expected: set[str], merge: bool = False,
            moved: Callable[[str, Path], object] = lambda run, where: None) -> int:
    """Unpack a tar stream (regular files only, each under an `expected` run dir when given, by a plain relative path:
    no empty, `.` or `..` part) with the `data` filter into `staging`, moving each file into `dest` as soon as it is
    complete; a run's generation file that differs from its local copy's first moves that copy aside (`moved`),
    unless `merge`. Returns the number of files."""
    import tarfile  # here, in the extractor: a fetch with nothing to send does not import it (~7 ms)

    head = stream.read(512)
    if not head:
        return 0
    files = 0
    with tarfile.open(fileobj=_Peeked(stream, head), mode="r|", bufsize=READ_SIZE) as tar:
        tar.copybufsize = READ_SIZE  # type: ignore[attr-defined]  # real, undocumented: typeshed leaves it out
        for member in tar:
            parts = member.name.split("/")  # no empty, '.' or '..' part (nor an absolute name): one run's file only
            top = parts[0]
            if (top.startswith(".") or (expected and top not in expected) or not member.isfile()
                    or any(part in ("", ".", "..") for part in parts)):
                raise RemoteError(f"the pod sent an unexpected path {member.name!r}; fetch aborted")
            try:
                tar.extract(member, staging, filter="data")
            except (tarfile.FilterError, OSError) as exc:
                raise RemoteError(f"the run data could not be unpacked: {exc}") from None
            if not merge and member.name == f"{top}/{GENERATION_FILE}" and (aside := _set_aside(staging, dest, top)):
                moved(top, aside)
            _place(staging, dest, member.name)
            files += 1
    return files


def _say_moved(run: str, where: Path) -> None:
    """One `RUN<TAB>WHERE` line at once (flushed): a fetch that kills this process still reads it, and says it."""
    sys.stdout.write(f"{run}\t{where}\n")
    sys.stdout.flush()


def _main(argv: list[str]) -> int:
    import tarfile

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the fetch decides
    merge = argv[:1] == ["--merge-replaced"]
    staging, dest, expected = Path(argv[merge]), Path(argv[merge + 1]), set(argv[merge + 2:])
    try:
        files = extract(sys.stdin.buffer, staging, dest, expected, merge, _say_moved)
    except (RemoteError, tarfile.TarError) as exc:
        sys.stderr.write(f"{getattr(exc, 'message', None) or f'the run data could not be unpacked: {exc}'}\n")
        return 2
    sys.stdout.write(f"{files}\n")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))

"""Receiving run directories: one tar stream from the pod, extracted here as it arrives.

No tarball is written on either side: the pod's `tar c` goes straight into the SSH channel, and this
side extracts member by member (with tarfile's `data` filter: no absolute paths, no `..`, no links
out). Everything lands in a staging folder first and replaces `LOCAL_ARTIFACTS_DIR/RUN_ID` only when
the stream ended well, so an interrupted fetch never leaves a half-updated run behind.
"""

from __future__ import annotations

import queue
import shutil
import sys
import tarfile
import threading
import time
from pathlib import Path

from .errors import RemoteError, WfopsError

PROGRESS_MIN_BYTES = 20 * 1024 * 1024
PROGRESS_EVERY_SECS = 1.0  # on a terminal (redrawn in place); every 2 s otherwise


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


class TarReceiver:
    """A stdout sink for the remote `tar c`; call `finish()` after the command ended."""

    def __init__(self, dest_root: Path, expected: set[str] | None = None, progress: bool = True) -> None:
        self.dest_root = dest_root
        self.expected = expected
        self.staging = dest_root / f".incoming-{int(time.time() * 1000)}"
        self.chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=256)
        self.buffer = b""
        self.received = 0
        self.total: int | None = None
        self.files = 0
        self.runs: list[str] = []
        self.error: BaseException | None = None
        self.started = time.time()
        self.show_progress = progress
        self.done = threading.Event()
        dest_root.mkdir(parents=True, exist_ok=True)
        self.staging.mkdir()
        self.thread = threading.Thread(target=self._extract, daemon=True)
        self.thread.start()
        self.progress_thread = threading.Thread(target=self._progress, daemon=True)
        self.progress_thread.start()

    # -- the sink side (the channel's reader thread)
    def __call__(self, chunk: bytes) -> None:
        self.received += len(chunk)
        if self.error is None:
            self.chunks.put(chunk)

    def meta(self, name: str, value: str) -> None:
        if name == "size" and value.isdigit():
            self.total = int(value)

    # -- the file side (tarfile reads from here)
    def read(self, n: int = -1) -> bytes:
        while (n < 0 or len(self.buffer) < n) and not self.done.is_set():
            chunk = self.chunks.get()
            if chunk is None:
                self.done.set()
                break
            self.buffer += chunk
        if n < 0:
            out, self.buffer = self.buffer, b""
        else:
            out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def _extract(self) -> None:
        try:
            with tarfile.open(fileobj=self, mode="r|") as tar:  # type: ignore[call-overload]
                for member in tar:
                    top = member.name.split("/", 1)[0]
                    if self.expected is not None and top not in self.expected:
                        raise RemoteError(f"the pod sent an unexpected path {member.name!r}; fetch aborted")
                    tar.extract(member, self.staging, filter="data")
                    if member.isfile():
                        self.files += 1
        except BaseException as exc:  # reported by finish(); keep draining so the channel never blocks
            self.error = exc
            if not self.done.is_set():
                while self.chunks.get() is not None:
                    pass
            self.done.set()

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

    def abort(self) -> None:
        self.chunks.put(None)
        self.thread.join()
        shutil.rmtree(self.staging, ignore_errors=True)

    def finish(self) -> list[Path]:
        """Wait for the extraction; move each run into place; return the run dirs."""
        self.chunks.put(None)
        self.thread.join()
        self.done.set()
        self.progress_thread.join()
        try:
            if self.error is not None:
                if isinstance(self.error, WfopsError):
                    raise self.error
                raise RemoteError(f"the run data could not be unpacked: {self.error}")
            placed = []
            for item in sorted(self.staging.iterdir()):
                target = self.dest_root / item.name
                old = self.dest_root / f".{item.name}.old-{int(time.time() * 1000)}"
                if target.exists():
                    target.rename(old)
                item.rename(target)
                shutil.rmtree(old, ignore_errors=True)
                placed.append(target)
            return placed
        finally:
            shutil.rmtree(self.staging, ignore_errors=True)

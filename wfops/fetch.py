"""Receiving run directories: one tar stream from the pod, extracted here as it arrives.

No tarball is written on either side: the pod's `tar c` goes straight into the SSH channel, and this
side pipes it into an extractor process (`python -m wfops.fetch STAGING RUN_ID...`) that unpacks member by
member with tarfile's `data` filter (no absolute paths, no `..`, no links out) and refuses anything outside
the requested runs. A separate process, because paramiko's reader and the extraction both need Python time:
in one process they share one GIL and ran at about a third of the speed. Everything lands in a staging folder
first and replaces `LOCAL_ARTIFACTS_DIR/RUN_ID` only when the stream ended well, so an interrupted fetch never
leaves a half-updated run behind.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

from .errors import RemoteError

READ_SIZE = 1024 * 1024
PROGRESS_MIN_BYTES = 20 * 1024 * 1024
PROGRESS_EVERY_SECS = 1.0  # on a terminal (redrawn in place); every 2 s otherwise


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


class TarReceiver:
    """A stdout sink for the remote `tar c`; call `finish()` after the command ended, `abort()` on failure."""

    def __init__(self, dest_root: Path, expected: set[str] | None = None, progress: bool = True) -> None:
        self.dest_root = dest_root
        self.received = 0
        self.total: int | None = None
        self.files = 0
        self.started = time.time()
        self.show_progress = progress
        self.done = threading.Event()
        dest_root.mkdir(parents=True, exist_ok=True)
        self.staging = dest_root / f".incoming-{int(time.time() * 1000)}"
        self.staging.mkdir()
        self.proc = subprocess.Popen([sys.executable, "-m", "wfops.fetch", str(self.staging), *sorted(expected or ())],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     bufsize=0)
        self.extractor_gone = False
        try:  # a 1 MiB pipe lets the channel reader run ahead of the extractor (Linux; best effort)
            import fcntl

            fcntl.fcntl(self.proc.stdin.fileno(), 1031, READ_SIZE)  # type: ignore[union-attr]  # F_SETPIPE_SZ
        except (ImportError, OSError):
            pass
        self.progress_thread = threading.Thread(target=self._progress, daemon=True)
        self.progress_thread.start()

    def __call__(self, chunk: bytes) -> None:
        self.received += len(chunk)
        if self.extractor_gone:
            return  # it refused the stream; keep draining the channel so the pod's tar can end
        try:
            self.proc.stdin.write(chunk)  # type: ignore[union-attr]
        except (BrokenPipeError, OSError):
            self.extractor_gone = True

    def meta(self, name: str, value: str) -> None:
        if name == "size" and value.isdigit():
            self.total = int(value)

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

    def _end_extractor(self) -> tuple[int, str, str]:
        out, err = self.proc.communicate()  # closes its stdin: the end of the stream
        self.done.set()
        self.progress_thread.join()
        return self.proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")

    def abort(self) -> None:
        self._end_extractor()
        shutil.rmtree(self.staging, ignore_errors=True)

    def finish(self) -> list[Path]:
        """Wait for the extraction; move each run into place; return the run dirs."""
        try:
            code, out, err = self._end_extractor()
            if code != 0:
                lines = [ln for ln in err.splitlines() if ln.strip()]
                raise RemoteError(lines[-1] if lines else f"the run data could not be unpacked (exit {code})")
            self.files = int(out.strip() or 0)
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


def extract(stream, staging: Path, expected: set[str]) -> int:
    """Unpack a tar stream into `staging`: only members under `expected` run dirs (when given), with the `data`
    filter. Returns the number of files."""
    files = 0
    with tarfile.open(fileobj=stream, mode="r|", bufsize=READ_SIZE) as tar:
        tar.copybufsize = READ_SIZE
        for member in tar:
            top = member.name.split("/", 1)[0]
            if expected and top not in expected:
                raise RemoteError(f"the pod sent an unexpected path {member.name!r}; fetch aborted")
            try:
                tar.extract(member, staging, filter="data")
            except (tarfile.FilterError, OSError) as exc:
                raise RemoteError(f"the run data could not be unpacked: {exc}") from None
            if member.isfile():
                files += 1
    return files


def _main(argv: list[str]) -> int:
    staging, expected = Path(argv[0]), set(argv[1:])
    try:
        files = extract(sys.stdin.buffer, staging, expected)
    except (RemoteError, tarfile.TarError) as exc:
        sys.stderr.write(f"{getattr(exc, 'message', None) or f'the run data could not be unpacked: {exc}'}\n")
        return 2
    sys.stdout.write(f"{files}\n")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))

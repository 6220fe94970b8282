"""An interactive terminal on the pod's tmux session (sweep.attach, task.attach), through the command's target:
the same connection factory, host keys and Lium address as every other command (wfops.transport.ssh), or plain
bash for the `local` target. Detach with tmux's own keys (Ctrl-b d); the sweep or task goes on.
"""

from __future__ import annotations

import os
import select
import shlex
import signal
import subprocess
import sys
from typing import TYPE_CHECKING, Any

from wfops.errors import NotFoundError, RemoteError, UsageError
from wfops.settings.load import Settings
from wfops.targets import resolve
from wfops.transport.ssh import SSHLink

if TYPE_CHECKING:
    from paramiko import Channel

    from wfops.targets.target import Target

NO_SESSION, NO_WINDOW = 65, 66  # exit codes of the attach script when there is nothing to attach to


def attach_script(settings: Settings, session: str, window: str | None = None) -> str:
    """bash: check the session (and window), then replace itself with `tmux attach`."""
    sock = settings.wf_tmux_socket
    tmux = "tmux" + (f" -L {shlex.quote(sock)}" if sock else "")
    target = shlex.quote("=" + session)
    lines = ["unset TMUX", f"{tmux} has-session -t {target} 2>/dev/null || exit {NO_SESSION}"]
    if window is not None:
        lines.append(f"{tmux} select-window -t {shlex.quote(f'={session}:={window}')} 2>/dev/null || exit {NO_WINDOW}")
    lines.append(f"exec {tmux} attach-session -t {target}")
    return "; ".join(lines)


def _size(fd: int) -> tuple[int, int]:
    try:
        size = os.get_terminal_size(fd)
        return size.columns or 80, size.lines or 24
    except OSError:
        return 80, 24


def _pump(chan: Channel, fd: int) -> None:
    """Copy keys to the channel and its output to the terminal until it closes."""
    out = sys.stdout.fileno()
    while True:
        watched: list[Any] = [chan, fd]  # select takes the channel (it has fileno()) and the terminal's fd
        ready = select.select(watched, [], [])[0]
        if chan in ready:
            data = chan.recv(65536)
            if not data:
                return
            os.write(out, data)
        if fd in ready:
            keys = os.read(fd, 4096)
            if not keys:
                return
            chan.sendall(keys)


def _over_ssh(target: Target, script: str) -> int:
    import termios
    import tty

    fd = sys.stdin.fileno()
    link = SSHLink(target)  # the connection factory of every command, keepalive included
    try:
        chan = link.conn.transport.open_session()
        cols, rows = _size(fd)
        chan.get_pty(term=os.environ.get("TERM") or "xterm-256color", width=cols, height=rows)
        chan.exec_command(f"bash -c {shlex.quote(script)}")
        saved = termios.tcgetattr(fd)
        previous = signal.signal(signal.SIGWINCH, lambda *_: chan.resize_pty(*_size(fd)))
        try:
            tty.setraw(fd)
            _pump(chan, fd)
        finally:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
            signal.signal(signal.SIGWINCH, previous)
        code: int = chan.recv_exit_status()
        return code
    finally:
        link.close()


def attach(settings: Settings, session: str, window: str | None = None, what: str = "") -> None:
    """Attach this terminal to `session` (selecting `window`) on the pod; returns when the user detaches."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError("attach needs a terminal (run it from an interactive shell, not a pipe or a script)")
    target = resolve.target(settings)
    for note in target.notes:
        print(f"wfops: {note}", file=sys.stderr)
    script = attach_script(settings, session, window)
    code = subprocess.call(["bash", "-c", script]) if target.is_local else _over_ssh(target, script)
    if code == NO_SESSION:
        raise NotFoundError(f"no tmux session {session} on {target.label}: {what or 'nothing'} is not running there "
                            "(see its status)")
    if code == NO_WINDOW:
        raise NotFoundError(f"{what} has no tmux window in session {session} on {target.label} any more "
                            "(it has ended: see its logs)")
    if code != 0:
        raise RemoteError(f"tmux attach on {target.label} ended with exit {code}")

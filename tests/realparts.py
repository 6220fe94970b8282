"""Real parts shared by the tests and the benchmarks: an OpenSSH server on loopback, started and
stopped by its own PID, and a fleet of such servers ("pods"), each on its own loopback address with its own
HOME. Nothing here skips: a missing tool fails with what to install."""

from __future__ import annotations

import getpass
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.slowness import scaled


class MissingTool(RuntimeError):
    pass


def need(tool: str, hint: str) -> str:
    path = shutil.which(tool) or (f"/usr/sbin/{tool}" if Path(f"/usr/sbin/{tool}").exists() else None)
    if not path:
        raise MissingTool(f"{tool} is required but is not installed: {hint}")
    return path


def copy_tree(src: Path, dst: Path) -> None:
    """Copy the directory `src` into `dst` (made if missing; what is there stays unless `src` has it too), symlinks
    as symlinks, modes and times kept: shutil.copytree(src, dst, symlinks=True, dirs_exist_ok=True), done by
    `cp -a`, which copies a checked-out pod (a venv of ~1,700 files) in under half of copytree's time."""
    dst.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(["cp", "-a", "--", f"{src}/.", str(dst)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"cp -a {src}/. {dst}: {out.stderr.strip()}")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class SSHD:
    host: str
    port: int
    user: str
    key: Path
    host_key_pub: Path
    log: Path
    proc: subprocess.Popen
    config: Path | None = None
    home: Path | None = None  # the HOME its sessions get (None: the user's own, from passwd)

    @property
    def address(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    def mark(self) -> int:
        return self.log.stat().st_size

    def since(self, mark: int) -> str:
        time.sleep(0.05)  # let the per-connection child finish writing its lines
        with self.log.open("rb") as fh:
            fh.seek(mark)
            return fh.read().decode("utf-8", "replace")

    def counts(self, mark: int) -> tuple[int, int]:
        """(connections, commands' execs) since `mark`, from sshd's own log. The exec that starts a keeper's kept
        agent (wfops.transport.podserver: its channel asks for WFOPS_KEPT_AGENT first, `req env`) is not a
        command's: kept_agents counts those."""
        text = self.since(mark)
        return text.count("Accepted publickey for"), self._execs(mark)[0]

    def kept_agents(self, mark: int) -> int:
        """How many kept agents keepers started since `mark` (an exec whose session asked for an env first)."""
        return self._execs(mark)[1]

    def _execs(self, mark: int) -> tuple[int, int]:
        """(commands' execs, kept agents' execs) since `mark`: a session's `req env` comes just before its `req exec`
        (a session number is used again once its channel closed). The whole log is read, so that a kept agent whose
        env request came before `mark` and its exec after is still a kept agent's; one seen half (env without exec
        yet) is none."""
        text = self.log.read_bytes()  # byte offsets, as `mark` is one
        pending: set[bytes] = set()
        commands = kept = 0
        for m in re.finditer(rb"session_input_channel_req: session (\d+) req (env|exec)", text):
            if m.group(2) == b"env":
                pending.add(m.group(1))
                continue
            ours = m.start() >= mark
            if m.group(1) in pending:
                pending.discard(m.group(1))
                kept += ours
            else:
                commands += ours
        return commands, kept


def _keygen(key: Path) -> None:
    keygen = need("ssh-keygen", "apt-get install openssh-client")
    subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)


def start_sshd(workdir: Path, host: str = "127.0.0.1", *, port: int | None = None, home: Path | None = None,
               client_key: Path | None = None, host_key: Path | None = None,
               setenv: dict[str, str] | None = None, new_session: bool = False, max_sessions: int = 64) -> SSHD:
    """An sshd on `host`:`port` (a free one by default), configured and logging under `workdir`.

    `home`: every session gets `HOME=home` (sshd_config `SetEnv`, which sshd applies after the passwd HOME, so
    `~` and `$HOME` of a non-interactive `bash -s` are `home`), and `TMUX_TMPDIR=home/.tmux` so that a tmux
    server named by `-L` is per home, not shared with the other pods. `client_key`/`host_key`: reuse existing
    keys (private key paths); by default new ones are made in `workdir`. `max_sessions`: sshd's MaxSessions (sessions
    a connection may hold at once; OpenSSH's default is 10). `new_session`: the sshd in a session
    of its own (it outlives a closed terminal: scripts/local_fleet.py)."""
    sshd_bin = need("sshd", "apt-get install openssh-server")
    workdir.mkdir(parents=True, exist_ok=True)
    if host_key is None:
        host_key = workdir / "host_ed25519"
        _keygen(host_key)
    if client_key is None:
        client_key = workdir / "client_ed25519"
        _keygen(client_key)
    (workdir / "authorized_keys").write_text(client_key.with_suffix(".pub").read_text())
    env = dict(setenv or {})
    if home is not None:
        home.mkdir(parents=True, exist_ok=True)
        (home / ".tmux").mkdir(mode=0o700, exist_ok=True)
        env = {"HOME": str(home), "TMUX_TMPDIR": str(home / ".tmux"), **env}
    if any(ch.isspace() or ch == '"' for item in env.items() for ch in "".join(item)):
        raise ValueError(f"SetEnv values must not contain spaces or quotes: {env}")
    port = port or free_port(host)
    cfg = workdir / "sshd_config"
    cfg.write_text(
        "\n".join([
            f"ListenAddress {host}", f"Port {port}", f"HostKey {host_key}", f"PidFile {workdir}/sshd.pid",
            f"AuthorizedKeysFile {workdir}/authorized_keys", "PermitRootLogin prohibit-password",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
            "UseDNS no", f"MaxSessions {max_sessions}", "MaxStartups 64:30:128", "Subsystem sftp internal-sftp",
            "AcceptEnv LANG LC_*", " ".join(["SetEnv SHLVL=1", *(f"{k}={v}" for k, v in env.items())]),
            "LogLevel DEBUG1",
        ]) + "\n"
    )
    try:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # the privilege separation dir (root only)
    except PermissionError:
        pass  # a normal user's sshd runs without privilege separation
    log = workdir / "sshd.log"
    log.touch()
    server = SSHD(host, port, getpass.getuser(), client_key, host_key.with_suffix(".pub"), log,
                  None, cfg, home)  # type: ignore[arg-type]
    server.proc = _spawn_sshd(sshd_bin, cfg, log, host, port, new_session)
    return server


def _spawn_sshd(sshd_bin: str, cfg: Path, log: Path, host: str, port: int,
                new_session: bool = False) -> subprocess.Popen:
    # -E: log to our file (with -e, DEBUG lines of the session child would reach the client's stderr)
    proc = subprocess.Popen([sshd_bin, "-D", "-E", str(log), "-f", str(cfg)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=new_session)
    deadline = time.time() + scaled(10)
    while True:
        try:
            with socket.create_connection((host, port), timeout=1) as s:
                if s.recv(4).startswith(b"SSH-"):
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"sshd did not start on {host}:{port}: {log.read_text()[-2000:]}")
        time.sleep(0.05)
    return proc


def stop_sshd(sshd: SSHD) -> None:
    sshd.proc.terminate()  # our own PID only; never pkill
    try:
        sshd.proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        sshd.proc.kill()
        sshd.proc.wait()


# ------------------------------------------------------------------ a pod dies, a pod comes back

def _stat(pid: int) -> list[str]:
    """/proc/PID/stat's fields after the command name (state, ppid, ..., flags at 6); [] when `pid` is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _ppid(pid: int) -> int:
    fields = _stat(pid)
    return int(fields[1]) if fields else -1


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (children, their children, ...)."""
    parents: dict[int, list[int]] = {}
    for p in _pids():
        parents.setdefault(_ppid(p), []).append(p)
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


PF_KTHREAD = 0x00200000  # /proc/PID/stat's flags: a kernel thread (no environment, ever)
DEAD = ("Z", "X")  # /proc/PID/stat's states of a process that is gone for our purposes (`running`)


def _environ(pid: int) -> bytes:
    """The environment `pid` was started with (b"" when it is gone: `running`). A process in the middle of an exec
    reads as empty for a moment, its new memory having no environment yet (read in a loop from their start on a busy
    machine, 13 of 300 children read as empty before their environment showed up; none through this function; an
    exiting one reads as empty too). So an empty answer from a live process that is not a kernel thread is read
    again, up to 1 s (scaled): without this, a tmux pane or a detached run caught mid-exec went unseen by the scan,
    and so unkilled by kill_sshd."""
    deadline = time.monotonic() + scaled(1)
    while True:
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            return b""
        fields = _stat(pid)
        if not fields or fields[0] in DEAD:
            return b""
        if env or int(fields[6]) & PF_KTHREAD or time.monotonic() > deadline:
            return env
        time.sleep(0.001)


def pids_with_env(name: str, value: str) -> list[int]:
    """Processes whose environment (as they were started) has `name=value` exactly; never this process."""
    entry = f"{name}={value}".encode()
    return [pid for pid in _pids()
            if pid != os.getpid() and entry in _environ(pid).split(b"\0")]


def pod_pids(sshd: SSHD) -> list[int]:
    """The processes of a pod: its sshd, the sshd's children (connections) and, for an sshd with its own home,
    every process started with HOME=that home (shells, tmux servers, runs that left the tree)."""
    pids = []
    if sshd.proc is not None and sshd.proc.poll() is None:
        pids = [sshd.proc.pid, *descendants(sshd.proc.pid)]
    if sshd.home is not None:
        pids += [p for p in pids_with_env("HOME", str(sshd.home)) if p not in pids]
    return pids


def kill_sshd(sshd: SSHD, everything: bool = True) -> list[int]:
    """The pod dies: SIGKILL its sshd (by its own PID) and, with `everything`, every process of the pod
    (pod_pids). The listening port is closed when this returns. Returns the PIDs it signalled."""
    pids = pod_pids(sshd) if everything else [sshd.proc.pid]
    for _ in range(3):  # a process may fork while we kill: look again
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        sshd.proc.wait()
        if not everything:
            break
        more = [p for p in pod_pids(sshd) if p not in pids]
        if not more:
            break
        pids += more
    _wait_gone(pids)
    return pids


def running(pid: int) -> bool:
    """A live process, not a zombie (an orphan that nobody reaps is gone for our purposes)."""
    fields = _stat(pid)
    return bool(fields) and fields[0] not in DEAD


def _wait_gone(pids: list[int], timeout: float = 10) -> None:
    deadline = time.time() + scaled(timeout)
    while any(running(p) for p in pids):
        if time.time() > deadline:
            raise RuntimeError(f"still running after SIGKILL: {[p for p in pids if running(p)]}")
        time.sleep(0.02)


def revive_sshd(sshd: SSHD) -> SSHD:
    """Start a stopped sshd again, with its own config (same address, port, keys, home)."""
    if sshd.proc is not None and sshd.proc.poll() is None:
        raise RuntimeError(f"sshd {sshd.host}:{sshd.port} is still running (pid {sshd.proc.pid})")
    assert sshd.config is not None
    sshd.proc = _spawn_sshd(need("sshd", "apt-get install openssh-server"), sshd.config, sshd.log, sshd.host,
                            sshd.port)
    return sshd


@dataclass
class FleetPod:
    index: int
    home: Path
    sshd: SSHD

    @property
    def host(self) -> str:
        return self.sshd.host

    @property
    def port(self) -> int:
        return self.sshd.port

    @property
    def address(self) -> str:
        return self.sshd.address

    @property
    def alive(self) -> bool:
        return self.sshd.proc is not None and self.sshd.proc.poll() is None


@dataclass
class LocalFleet:
    """N sshd "pods" on 127.0.0.2, 127.0.0.3, ... each with its own HOME under `root`, one client key."""

    root: Path
    key: Path
    pods: list[FleetPod] = field(default_factory=list)

    def hosts_line(self) -> str:
        """The value for OPS_HOSTS: `user@127.0.0.2:PORT,user@127.0.0.3:PORT,...`."""
        return ",".join(p.address for p in self.pods)

    def kill(self, i: int, everything: bool = True) -> list[int]:
        return kill_sshd(self.pods[i].sshd, everything)

    def revive(self, i: int) -> FleetPod:
        revive_sshd(self.pods[i].sshd)
        return self.pods[i]

    def stop(self) -> None:
        """Stop every pod and everything it runs (a pod already killed: whatever of it is left)."""
        for pod in self.pods:
            kill_sshd(pod.sshd)

    def pids(self) -> list[int]:
        return [pid for pod in self.pods for pid in pod_pids(pod.sshd)]


def fleet_host(i: int) -> str:
    """The loopback address of pod `i`: 127.0.0.2 for pod 0, ... (127.0.0.1 stays the single sshd's)."""
    n = i + 2
    if not 2 <= n < 255 * 255:
        raise ValueError(f"pod index {i} out of range")
    return f"127.0.{n // 255}.{n % 255}" if n >= 255 else f"127.0.0.{n}"


def start_fleet(root: Path, n: int, new_session: bool = False) -> LocalFleet:
    """Start `n` pods under `root` (root/podI/home is pod I's HOME, root/podI/sshd its sshd files)."""
    root.mkdir(parents=True, exist_ok=True)
    key = root / "client_ed25519"
    if not key.exists():
        _keygen(key)
    host_key = root / "host_ed25519"
    if not host_key.exists():
        _keygen(host_key)
    fleet = LocalFleet(root, key)
    try:
        for i in range(n):
            base = root / f"pod{i}"
            home = base / "home"
            server = start_sshd(base / "sshd", fleet_host(i), home=home, client_key=key, host_key=host_key,
                                new_session=new_session)
            fleet.pods.append(FleetPod(i, home, server))
    except BaseException:
        fleet.stop()
        raise
    return fleet

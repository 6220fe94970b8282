"""Real parts shared by the tests and the benchmarks: an OpenSSH server on loopback, started and
stopped by its own PID. Nothing here skips: a missing tool fails with what to install."""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


class MissingTool(RuntimeError):
    pass


def need(tool: str, hint: str) -> str:
    path = shutil.which(tool) or (f"/usr/sbin/{tool}" if Path(f"/usr/sbin/{tool}").exists() else None)
    if not path:
        raise MissingTool(f"{tool} is required but is not installed: {hint}")
    return path


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
        """(connections, execs) since `mark`, from sshd's own log."""
        text = self.since(mark)
        return text.count("Accepted publickey for"), text.count("req exec")


def start_sshd(workdir: Path, host: str = "127.0.0.1") -> SSHD:
    sshd_bin = need("sshd", "apt-get install openssh-server")
    keygen = need("ssh-keygen", "apt-get install openssh-client")
    workdir.mkdir(parents=True, exist_ok=True)
    host_key, client_key = workdir / "host_ed25519", workdir / "client_ed25519"
    for key in (host_key, client_key):
        subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    (workdir / "authorized_keys").write_text(client_key.with_suffix(".pub").read_text())
    port = free_port(host)
    cfg = workdir / "sshd_config"
    cfg.write_text(
        "\n".join([
            f"ListenAddress {host}", f"Port {port}", f"HostKey {host_key}", f"PidFile {workdir}/sshd.pid",
            f"AuthorizedKeysFile {workdir}/authorized_keys", "PermitRootLogin prohibit-password",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
            "UseDNS no", "MaxSessions 64", "MaxStartups 64:30:128", "Subsystem sftp internal-sftp",
            "AcceptEnv LANG LC_*", "SetEnv SHLVL=1", "LogLevel DEBUG1",
        ]) + "\n"
    )
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    log = workdir / "sshd.log"
    log.touch()
    # -E: log to our file (with -e, DEBUG lines of the session child would reach the client's stderr)
    proc = subprocess.Popen([sshd_bin, "-D", "-E", str(log), "-f", str(cfg)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 10
    while True:
        try:
            with socket.create_connection((host, port), timeout=1) as s:
                if s.recv(4).startswith(b"SSH-"):
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise RuntimeError(f"sshd did not start: {log.read_text()[-2000:]}")
        time.sleep(0.05)
    return SSHD(host, port, getpass.getuser(), client_key, host_key.with_suffix(".pub"), log, proc)


def stop_sshd(sshd: SSHD) -> None:
    sshd.proc.terminate()  # our own PID only; never pkill
    try:
        sshd.proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        sshd.proc.kill()
        sshd.proc.wait()

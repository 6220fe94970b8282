"""Read-only commands against the loopback sshd, beside two floors measured in the same run.

    .venv/bin/python benchmarks/bench_commands.py [--repeat 15]

Prints a markdown table: the median (and p90) wall time of `wfops fsm.status`, `task.status` and
`task.list` as a user runs them (a fresh process each time), next to a fresh Fabric connection running
`true` (in a fresh process, and in-process) and OpenSSH's `ssh host true`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from _harness import loopback_pod, ms, p90, print_table, ssh_argv, timed, wf


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=15)
    n = ap.parse_args().repeat
    with loopback_pod("ssh") as (_work, sshd, env):
        wf(env, "task.run", "--id", "bench", "--cmd", "echo hello")
        wf(env, "task.wait", "--id", "bench")
        rows = []
        for label, args in (("wfops fsm.status", ["fsm.status"]),
                            ("wfops task.status --id bench", ["task.status", "--id", "bench"]),
                            ("wfops task.list", ["task.list"])):
            samples = timed(lambda args=args: wf(env, *args), n)
            rows.append([label, ms(samples), p90(samples)])
        fabric_code = (
            "from fabric import Config, Connection\n"
            f"c = Connection({sshd.host!r}, user={sshd.user!r}, port={sshd.port}, "
            "config=Config(overrides={'load_ssh_configs': False}), "
            f"connect_kwargs={{'key_filename': {str(sshd.key)!r}, 'look_for_keys': False, 'allow_agent': False}})\n"
            "c.run('true', hide=True, in_stream=False)\nc.close()\n"
        )
        samples = timed(lambda: subprocess.run([sys.executable, "-c", fabric_code], check=True, env=env), n)
        rows.append(["floor: fresh python + Fabric connection + run('true')", ms(samples), p90(samples)])
        from fabric import Config, Connection

        def in_process() -> None:
            c = Connection(sshd.host, user=sshd.user, port=sshd.port,
                           config=Config(overrides={"load_ssh_configs": False}),
                           connect_kwargs={"key_filename": str(sshd.key), "look_for_keys": False,
                                           "allow_agent": False})
            c.run("true", hide=True, in_stream=False)
            c.close()

        samples = timed(in_process, n)
        rows.append(["floor: Fabric connection + run('true'), in-process", ms(samples), p90(samples)])
        samples = timed(lambda: subprocess.run(ssh_argv(sshd, "true"), check=True), n)
        rows.append(["floor: OpenSSH `ssh host true`", ms(samples), p90(samples)])
        samples = timed(lambda: subprocess.run([sys.executable, "-c", "import wfops.tasks"], check=True), n)
        rows.append(["context: python start + import wfops.tasks", ms(samples), p90(samples)])
    print_table(f"Read-only commands vs floors (loopback sshd, {n} runs each, {time.strftime('%Y-%m-%d')})",
                ["what", "median ms", "p90 ms"], rows)


if __name__ == "__main__":
    main()

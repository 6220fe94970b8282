"""One wfops command against the pod: settings -> target -> one session -> rendered scripts.

    with PodCommand("task.status", settings) as cmd:
        result = cmd.run("task_status.sh.j2", task_id=..., tail_lines=20)

Every script rendered here extends `_command.sh.j2`, so the FSM gate for `cmd.rule`, the config
sync and the command lock always travel in the same exec as the work.
"""

from __future__ import annotations

import sys

from . import fsm
from .config import Settings
from .errors import ConnectError
from .remote import ExecResult, MetaSink, Redactor, Session, StdoutSink, open_session
from .render import helper, render
from .target import Target, resolve_target

LOCK_WAIT_SECS = 10


class PodCommand:
    def __init__(self, command: str, settings: Settings, target: Target | None = None) -> None:
        self.command = command
        self.settings = settings
        self.rule = fsm.rule(command)
        self.target = target
        self.session: Session | None = None
        self.redact = Redactor(settings.secret_values())

    def __enter__(self) -> PodCommand:
        if self.target is None:
            self.target = resolve_target(self.settings)
        for note in self.target.notes:
            print(f"wfops: {note}", file=sys.stderr)
        try:
            self.session = open_session(self.target, self.redact)
        except ConnectError:
            from .pods import resolve_again  # a cached Lium address may be stale (the pod moved): look once more

            fresh = resolve_again(self.settings, self.target)
            if fresh is None:
                raise
            self.target = fresh
            for note in fresh.notes:
                print(f"wfops: {note}", file=sys.stderr)
            self.session = open_session(self.target, self.redact)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.session is not None:
            self.session.close()

    def context(self) -> dict[str, object]:
        s = self.settings
        return {
            "command": self.command,
            "rule": self.rule,
            "enforce": bool(s["WF_FSM_ENFORCE"]),
            "outputs_dir": s.values["OPS_REMOTE_OUTPUTS_DIR"],
            "state_file": s.state_file,
            "env_path": s.values["REMOTE_ENV_PATH"],
            "env_text": s.pod_env_text(),
            "env_sha": s.pod_env_sha256(),
            "remote_python": s.values["REMOTE_PYTHON_BIN"],
            "tmux_socket": s.values["WF_TMUX_SOCKET"],
            "helper": helper(),
            "lock_wait_secs": LOCK_WAIT_SECS,
            "dry_run": False,
        }

    def script(self, template: str, **context: object) -> str:
        return render(template, **{**self.context(), **context})

    def exec(self, template: str, stdout_sink: StdoutSink | None = None, meta: MetaSink | None = None,
             **context: object) -> ExecResult:
        assert self.session is not None, "use PodCommand as a context manager"
        return self.session.exec_script(self.script(template, **context), stdout_sink, meta)

    def run(self, template: str, **context: object) -> dict:
        """Render, run in one exec, return the JSON result (errors raise WfopsError)."""
        return self.exec(template, **context).json(self.command, self.redact)


def run_once(command: str, settings: Settings, template: str, **context: object) -> dict:
    """The common case: one command, one connection, one script, its JSON result."""
    with PodCommand(command, settings) as cmd:
        return cmd.run(template, **context)

"""One wfops command against the pod: settings -> target -> one session -> rendered scripts.

    with PodCommand("task.status", settings) as cmd:
        result = cmd.call("task-show", id=..., tail=20)

`call` sends one request to the pod agent (wfops/agent) in one exec: the agent runs the workflow gate for
`cmd.command` and the config sync (its prelude), then the agent command with its arguments. The request
travels on the agent's stdin, never in argv. Every script extends `_command.sh.j2` (python, the command lock).
The agent itself is sent only to a pod that asks for it (`@wfops-need agent`), on the same stdin.

The session is the target's warm keeper when WF_PERSIST_SECS > 0 (wfops.transport.warm, wfops.transport.keeper), else a
connection
of this process alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from wfops.agent import states, wire
from wfops.errors import ConnectError, Unreached, env_seconds
from wfops.settings.load import Settings
from wfops.targets import resolve
from wfops.targets.target import Member, Target
from wfops.transport import rules as fsm
from wfops.transport.connect import open_session
from wfops.transport.render import AGENT_CALL, NEED_AGENT, agent, b64, render
from wfops.transport.requestline import request_line
from wfops.transport.session import (
    ExecResult,
    LineSink,
    MetaSink,
    Redactor,
    ServeOrder,
    Session,
    StdoutSink,
    stderr_line,
)

if TYPE_CHECKING:  # the wire's TypedDicts exist for the type checker only (the pod agent never imports typing)
    from wfops.agent.wire import PodLayout, Prelude, Request

class Outgoing(NamedTuple):
    """An agent call as it leaves: the script with the request after it, and the read it carries (or None)."""
    text: str
    serve: ServeOrder | None


SERVE_TEMPLATE = "agent_serve.sh.j2"
LOCK_WAIT_SECS = 10  # a mutating command waits this long for the pod's command lock (another command's)
LOCK_WAIT_ENV = "WFOPS_LOCK_WAIT_SECS"  # overrides it (seconds > 0)


class PodCommand:
    def __init__(self, command: str, settings: Settings, target: Target | None = None,
                 member: Member | None = None, log: LineSink = stderr_line) -> None:
        """`member`: one pod of wfops.targets.resolve.pods(settings) (a fleet command's pod); `target`: an address
        already resolved; neither: resolve.one(settings), the command's one pod. `log`: where progress lines go
        (notes, the pod's stderr): a fleet pod's is wfops.fanout.PodLog (`[pod] line`)."""
        self.command = command
        self.log = log
        self.settings = settings
        self.member = member
        self.rule = fsm.rule(command)
        self.target = target
        self.session: Session | None = None
        self.redact = Redactor(settings.secret_values())
        self.installed: list[str] = []  # where this command installed the pod agent (first contact)
        self._contacted = False  # an exec was tried (_exec_text: a second look only at first contact)

    def __enter__(self) -> PodCommand:
        if self.session is not None:  # given one already (the lean entry's keeper session, wfops.lean)
            return self
        if self.target is None:
            if self.member is None:
                self.member = resolve.one(self.settings)
            self.target = resolve.target(self.settings, self.member)
        for note in self.target.notes:
            self.log(f"wfops: {note}")
        try:
            self.session = open_session(self.target, self.redact, self.persist, self.log)
        except ConnectError:
            if not self._look_again():
                raise
        return self

    def _look_again(self) -> bool:
        """The target did not answer before anything reached it: a cached Lium address may be stale, so it is
        looked up once more and a session opened to where the pod is now (False: nothing to look up again)."""
        assert self.target is not None
        fresh = resolve.again(self.settings, self.target, self.member)
        if fresh is None:
            return False
        if self.session is not None:
            self.session.close()
        self.target = fresh
        for note in fresh.notes:
            self.log(f"wfops: {note}")
        self.session = open_session(self.target, self.redact, self.persist, self.log)
        return True

    def _exec_text(self, text: str, stdout_sink: StdoutSink | None, meta: MetaSink,
                   serve: ServeOrder | None = None) -> ExecResult:
        """One exec; at first contact through a warm keeper that could not reach the pod (nothing ran), the same
        second look a cold connect gets (__enter__)."""
        assert self.session is not None, "use PodCommand as a context manager"
        first, self._contacted = not self._contacted, True
        try:
            return self.session.exec_script(text, stdout_sink, meta, serve)
        except Unreached:
            if not first or not self._look_again():
                raise
        return self.session.exec_script(text, stdout_sink, meta, serve)

    @property
    def persist(self) -> float:
        return float(self.settings.wf_persist_secs)

    def __exit__(self, *exc: object) -> None:
        if self.session is not None:
            self.session.close()

    def context(self) -> dict[str, object]:
        s = self.settings
        return {
            "command": self.command,
            "rule": self.rule,
            "outputs_dir": s.ops_remote_outputs_dir,
            "remote_python": s.remote_python_bin,
            "names": {"control": states.CONTROL_DIR, "agent": states.AGENT_DIR, "lock": states.LOCK_FILE},
            "agent": agent(),
            "lock_wait_secs": f"{env_seconds(LOCK_WAIT_ENV, LOCK_WAIT_SECS):g}",
            "dry_run": False,  # a dry run takes no command lock (it would create the lock file)
        }

    def request(self, agent_command: str, data: dict[str, object], dry_run: bool = False) -> Request:
        """What the pod agent reads on stdin (wfops.agent.wire.Request): the pod layout, the prelude (gate + config
        sync), the command and its arguments."""
        s = self.settings
        pod: PodLayout = {"out": s.ops_remote_outputs_dir, "state_file": s.state_file,
                          "env_path": s.remote_env_path, "tmux_socket": s.wf_tmux_socket}
        prelude: Prelude = {"command": self.command, "enforce": s.wf_fsm_enforce, "dry_run": dry_run,
                            "env": {"sha": s.pod_env_sha256(), "b64": b64(s.pod_env_text())}}
        return {"cmd": agent_command, "pod": pod, "prelude": prelude, "data": data}

    def script(self, template: str, **context: object) -> str:
        return render(template, **{**self.context(), **context})

    def exec(self, template: str, stdout_sink: StdoutSink | None = None, meta: MetaSink | None = None,
             request: Request | None = None, **context: object) -> ExecResult:
        """Render and run one script; `request` (for the agent) travels after it on the same stdin."""
        text = self.script(template, **context)
        if request is not None:
            text += request_line(request)
        return self._exec_text(text, stdout_sink, self._meta(meta))

    def _meta(self, forward: MetaSink | None) -> MetaSink:
        def sink(name: str, value: str) -> None:
            if name == NEED_AGENT:  # this pod lacks the agent: it follows on the same stdin
                assert self.session is not None
                self.session.send(agent().line())
            elif name == "installed":
                self.installed.append(value)
            elif forward is not None:
                forward(name, value)
        return sink

    def call_text(self, agent_command: str, data: dict[str, object], dry_run: bool = False) -> Outgoing:
        """What `call(agent_command, **data)` sends: the script and the request after it, and the read it carries
        when it is one (wfops.lean keeps both for its cached fast path, wfops.leancache)."""
        script, request, serve = self.call_parts(agent_command, data, dry_run)
        return Outgoing(script + request_line(request), serve)

    def call_parts(self, agent_command: str, data: dict[str, object],
                   dry_run: bool = False) -> tuple[str, Request, ServeOrder | None]:
        """call_text's parts apart: the agent script, the request, the read it carries (wfops.leanfetch keeps them
        and puts each fetch's data into the request)."""
        script = self.script("agent.sh.j2", dry_run=dry_run)
        return (script, self.request(agent_command, data, dry_run),
                self.serve_order(agent_command, len(script.encode()), dry_run))

    def serve_order(self, agent_command: str, skip: int, dry_run: bool) -> ServeOrder | None:
        """The read a warm keeper may have its pod's kept agent answer (wfops.transport.podserver): an agent command
        of wire.SERVED from a command that takes no lock, not a dry run; None otherwise."""
        if dry_run or self.rule.mutating or agent_command not in wire.SERVED:
            return None
        return {"start": self.serve_script(), "key": agent().sha, "skip": skip}

    def serve_script(self) -> str:
        """The script that starts the pod's kept agent: the same for every command (one per pod layout and agent)."""
        return self.script(SERVE_TEMPLATE, command="agent.serve", rule={"mutating": False}, dry_run=False,
                           serve_call=AGENT_CALL, serve_flag=wire.SERVE_FLAG)

    def send_text(self, out: Outgoing) -> dict[str, Any]:
        """Run `call_text`'s text in one exec, as `call` runs it: its JSON result (errors raise WfopsError)."""
        return self._exec_text(out.text, None, self._meta(None), out.serve).json(self.command, self.redact)

    def call(self, agent_command: str, dry_run: bool = False, **data: object) -> dict[str, Any]:
        """One agent command in one exec; its JSON result."""
        return self.send_text(self.call_text(agent_command, data, dry_run))


def call_once(command: str, settings: Settings, agent_command: str, *, member: Member | None = None,
              log: LineSink = stderr_line, **data: object) -> dict[str, Any]:
    """The common case: one command, one connection, one agent call, its JSON result (`member`: a fleet command's
    pod; default: the command's one pod)."""
    with PodCommand(command, settings, member=member, log=log) as cmd:
        return cmd.call(agent_command, **data)  # type: ignore[arg-type]  # the agent's arguments: none is dry_run

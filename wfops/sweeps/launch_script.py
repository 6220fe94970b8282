"""A run's launch script (command.sh) from a Jinja template the user may replace. Pure (no pod, no SSH).

sweep.start and sweep.add render one script per run here, before any pod is asked, and it travels in the run's
queue entry as "script" ({text, mark, source}); sweep.retry and the queue's own retries reuse it. The
template is RUN_TEMPLATE, else `run_command.sh.j2` beside the config file, else the one wfops ships
(remote_templates/run_command.sh.j2), which renders exactly the command.sh of wfops before templates.

What the template sees (RunContext): render-time values from the CSV and the config, and `rt`, the values only
the pod knows at launch (wfops/agent/runscript.py: RUNTIME). Each `rt.NAME` renders as a marker that the pod
replaces with the value, already quoted. Every `{{ ... }}` is a quoted shell word: values are quoted by
the same `q` as every other script (whether or not the template says `| q`), so a hostile override stays one
word; _Scan refuses a value where that word's quoting would not hold (inside the template's own quotes, a
here-document, or a comment it could end with a newline). A template that cannot be read, does not parse,
names an unknown variable, puts a run-time value inside a string or a value in such a place is one line
(UsageError) and nothing is sent.
"""

from __future__ import annotations

import hashlib
import json
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from wfops import __version__
from wfops.agent.runscript import MARKER_RE, RUNTIME, marker
from wfops.errors import UsageError
from wfops.settings.load import Settings
from wfops.sweeps.args import Override
from wfops.sweeps.model import RunSpec, common_overrides, run_gpus, with_common
from wfops.transport import shell
from wfops.transport.render import templates_dir

if TYPE_CHECKING:
    import jinja2

TEMPLATE_NAME = "run_command.sh.j2"  # the shipped default, and the name of a project's own beside its config
MAX_TEMPLATE = 256 * 1024  # bytes of a run template (the shipped one is under 1 KiB)


class Quoted(str):
    """Shell text that is already quoted (a `q` result, or a run-time marker): printed as it is."""


class RunContext(TypedDict):
    """The variables a run template sees (docs/sweeps.md: Launch script)."""

    run_id: str  # the CSV's run_id
    config: str  # the CSV's config, relative to the workdir
    seed: int | None  # the CSV's seed (None when the CSV has no seed)
    overrides: list[tuple[str, str]]  # SWEEP_COMMON_OVERRIDES then the row's own, (key, value) in order; a
    # flag's value is its value words (`true` for a bare flag), placeholders as written
    gpus: str  # the GPU request: a whole number as text, or "all"
    nodes: int  # pods the run spans (CSV `nodes`; 1 for most runs)
    launcher_kind: str  # TRAIN_LAUNCHER: auto, torchrun or python (auto: the pod decides per run)
    train_script: str  # TRAIN_SCRIPT, relative to the workdir
    train_workdir: str  # TRAIN_WORKDIR, relative to OPS_REMOTE_REPO
    version: str  # wfops' version
    rt: dict[str, Quoted]  # run-time values, filled in on the pod (runscript.RUNTIME)


class Script(TypedDict):
    """A queue entry's "script": the rendered text, the mark of its run-time markers, and its template."""

    text: str
    mark: str
    source: str


class _Quoter:
    """`q` and `qpath` of a run template, and what every `{{ ... }}` goes through (Jinja's finalize): a value
    comes out as one quoted shell word unless it is one already (Quoted). A value that holds a marker of the
    run being rendered would be filled in inside its own quotes: refused."""

    def __init__(self) -> None:
        self.mark = ""

    def _check(self, value: object) -> None:
        if self.mark and f"@wfops-{self.mark}:" in str(value):
            raise _Misplaced

    def _word(self, value: object, quote: Callable[[object], str]) -> Quoted:
        if isinstance(value, Quoted):
            return value
        self._check(value)
        return Quoted(quote(value))

    def q(self, value: object) -> Quoted:
        return self._word(value, shell.q)

    def qpath(self, value: object) -> Quoted:
        return self._word(value, shell.qpath)

    def emit(self, value: object) -> str:
        """What a `{{ ... }}` prints: its quoted word, fenced so that _Scan can tell where it landed (a constant
        that Jinja folds when it compiles, with no mark yet, is the template's own text: not fenced)."""
        word = self.q(value)
        if not self.mark:
            return word
        start, end = _fences(self.mark)
        return start + word + end


@dataclass(frozen=True)
class RunTemplate:
    path: Path
    text: str
    compiled: jinja2.Template
    quoter: _Quoter


class _Misplaced(Exception):
    """A run-time marker met outside a Quoted value: it would be filled in inside someone else's quotes."""


def template_path(settings: Settings) -> Path:
    """RUN_TEMPLATE (relative to the current directory, as SWEEP_CSV), else run_command.sh.j2 beside the
    config file, else the shipped one."""
    named = settings.run_template or ""
    if named:
        return Path(named).expanduser()
    if settings.path is not None and (settings.path.parent / TEMPLATE_NAME).is_file():
        return settings.path.parent / TEMPLATE_NAME
    return templates_dir() / TEMPLATE_NAME


def _environment(folder: Path, quoter: _Quoter) -> jinja2.Environment:
    import jinja2
    from jinja2.sandbox import SandboxedEnvironment

    # sandboxed: a template reaches its values, not this machine's Python (os.environ, files, code)
    env = SandboxedEnvironment(loader=jinja2.FileSystemLoader(str(folder)), undefined=jinja2.StrictUndefined,
                             autoescape=False, keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True,
                             comment_start_string="{##", comment_end_string="##}", finalize=quoter.emit)
    env.filters["q"] = quoter.q
    env.filters["qpath"] = quoter.qpath
    return env


def _one_line(path: Path, line: int | None, what: str) -> UsageError:
    where = f"{path}:{line}" if line else str(path)
    text = " ".join(str(what).split())
    return UsageError(f"run template {where}: {text}; nothing was started "
                      "(RUN_TEMPLATE, docs/sweeps.md: Launch script)")


def _template_line(exc: BaseException) -> int | None:
    """The template line a render error came from (Jinja rewrites its traceback frames to template lines; a
    template made by from_string is `<template>`)."""
    line, tb = None, exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def load(settings: Settings) -> RunTemplate:
    """The run template, compiled; UsageError (one line) when it cannot be read or does not parse."""
    import jinja2

    path = template_path(settings)
    text = _read(path)
    quoter = _Quoter()
    try:
        compiled = _environment(path.resolve().parent, quoter).from_string(text)
    except jinja2.TemplateSyntaxError as exc:
        raise _one_line(path, exc.lineno, exc.message or "syntax error") from None
    return RunTemplate(path, text, compiled, quoter)


def _read(path: Path) -> str:
    """The template's text: a regular file (a FIFO would block, a device never end) of at most MAX_TEMPLATE
    bytes (its rendered text travels in every run's queue entry), UTF-8 with or without a BOM."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise _one_line(path, None, "it is not a regular file")
        if info.st_size > MAX_TEMPLATE:
            raise _one_line(path, None, f"it is {info.st_size:,} bytes; a run template may have {MAX_TEMPLATE:,}")
        return path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise _one_line(path, None, f"cannot read it: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise _one_line(path, None, "it is not UTF-8 text") from None


def context(settings: Settings, run: RunSpec, common: tuple[Override, ...]) -> RunContext:
    overrides = [(o.key, o.value()) for o in with_common(run, common)]
    return RunContext(run_id=run.run_id, config=run.config, seed=run.seed, overrides=overrides,
                      gpus=run_gpus(run, settings.run_gpus), nodes=run.nodes, launcher_kind=settings.train_launcher,
                      train_script=settings.train_script, train_workdir=settings.train_workdir, version=__version__,
                      rt={})


def render(template: RunTemplate, ctx: RunContext) -> Script:
    """One run's script. Its mark is a hash of the template and the run's values: no value can spell it."""
    import jinja2

    plain = {k: v for k, v in ctx.items() if k != "rt"}
    mark = hashlib.sha256(template.text.encode() + b"\0" + json.dumps(plain, sort_keys=True).encode()).hexdigest()[:16]
    ctx["rt"] = {name: Quoted(marker(mark, name)) for name in RUNTIME}
    template.quoter.mark = mark
    try:
        text = _Scan(template.compiled.render(**ctx), mark).run()
    except _Unsafe as exc:
        raise _one_line(template.path, None,
                        f"line {exc.line} of the script it renders for run {ctx['run_id']} has a {{{{ ... }}}} value "
                        f"that needs quoting inside {exc.where}, where its quoting does not hold: put it outside "
                        "quotes, as a shell word of its own") from None
    except _Misplaced as exc:
        raise _one_line(template.path, _template_line(exc),
                        "a run-time value ({{ rt.NAME }}) must stand alone as a shell word, not inside a string "
                        "or through another filter") from None
    except jinja2.TemplateError as exc:
        raise _one_line(template.path, _template_line(exc), exc.message or repr(exc)) from None
    except Exception as exc:  # the template's own expressions ({{ seed + 'x' }}): still one line
        raise _one_line(template.path, _template_line(exc), f"{type(exc).__name__}: {exc}") from None
    shipped = template.path == templates_dir() / TEMPLATE_NAME
    return Script(text=text, mark=mark, source=f"wfops {TEMPLATE_NAME}" if shipped else str(template.path))


def scripts(settings: Settings, runs: list[RunSpec]) -> dict[str, Script]:
    """run_id -> its rendered launch script, for every run (the first error stops it: one line)."""
    template = load(settings)
    common = common_overrides(settings)
    return {r.run_id: render(template, context(settings, r, common)) for r in runs}


# ---------------------------------------------------------------- where a `{{ ... }}` value lands in the script

_WORD_START = frozenset(" \t\n;&|()<>")
_WHERE = {"'": "single quotes", '"': "double quotes", "`": "backquotes", "${": "a ${...}",
          "<<": "a here-document", "#": "a comment (where a newline in it would end the comment)"}
_ONE_LINE_RT = frozenset(RUNTIME) - {"exports", "launcher"}  # run-time values that never hold a newline
_PLAIN_RT = frozenset({"name", "sweep_id", "attempt", "max_attempts", "port", "nproc", "node_rank", "nnodes"})
_PLAIN_RE = re.compile(r"[\w@%+=:,./-]+", re.ASCII)  # a word shlex.quote leaves as it is: safe in any quotes


class _Unsafe(Exception):
    def __init__(self, line: int, where: str) -> None:
        super().__init__(where)
        self.line, self.where = line, where


class _Scan:
    """The rendered script, read as bash reads it, just far enough to know the quoting context of each `{{ }}`
    value: one is safe where bash splits words, or when no quoting changes it (an id, a number); not inside
    quotes, backquotes, ${...} or a here-document, nor in a comment unless it is one line."""

    def __init__(self, text: str, mark: str) -> None:
        self.text, self.mark, self.i, self.line = text, mark, 0, 1
        self.open, self.close = _fences(mark)
        self.stack: list[str] = ["top"]
        self.heredocs: list[tuple[str, bool]] = []  # delimiters of the here-documents that start after this line
        self.out: list[str] = []

    def run(self) -> str:
        while self.i < len(self.text):
            ch = self.text[self.i]
            if self.text.startswith(self.open, self.i):
                self._value()
            elif self.stack[-1] == "<<":
                self._heredoc_line()
            else:
                self._char(ch)
        return "".join(self.out)

    def _value(self) -> None:
        end = self.text.index(self.close, self.i)
        value, context = self.text[self.i + len(self.open):end], self.stack[-1]
        names = _rt_names(value, self.mark)
        one_line = "\n" not in value and all(name in _ONE_LINE_RT for name in names)
        plain = (value == marker(self.mark, names[0]) and names[0] in _PLAIN_RT) if names else bool(
            _PLAIN_RE.fullmatch(value))  # a value no quoting changes (an id, a number): fine inside quotes too
        if context not in ("top", "$(", "(") and not plain and not (context == "#" and one_line):
            raise _Unsafe(self.line, _WHERE[context])
        self.out.append(value)
        self.line += value.count("\n")
        self.i = end + len(self.close)

    def _char(self, ch: str) -> None:
        ctx, two = self.stack[-1], self.text[self.i:self.i + (3 if self.text.startswith("<<<", self.i) else 2)]
        prev = self.out[-1][-1:] if self.out else "\n"
        self.out.append(ch)
        self.i += 1
        if ch == "\n":
            self.line += 1
            if ctx == "#":
                self.stack.pop()
            if self.heredocs and self.stack[-1] in ("top", "$(", "("):
                self.stack.append("<<")
            return
        if ctx == "'":
            if ch == "'":
                self.stack.pop()
        elif ctx == "#":
            pass
        elif ch == "\\":
            self._take(1)
        elif ch == "`":
            self.stack.pop() if ctx == "`" else self.stack.append("`")
        elif ctx == "${":
            if ch == "}":
                self.stack.pop()
        elif two in ("$(", "${"):
            self.stack.append(two)
            self._take(1)
        elif ctx == '"':
            if ch == '"':
                self.stack.pop()
        else:
            self._code(ch, ctx, two, prev)

    def _code(self, ch: str, ctx: str, two: str, prev: str) -> None:
        """A character outside quotes (top level, $(...) or (...))."""
        if ch in "'\"":
            self.stack.append(ch)
        elif ch == "#" and prev in _WORD_START:
            self.stack.append("#")
        elif ch == "(":
            self.stack.append("(")
        elif ch == ")" and ctx in ("$(", "("):
            self.stack.pop()
        elif two == "<<<":
            self._take(2)  # a here-string: a word like any other
        elif two == "<<":
            self._take(1)
            strip = self.text[self.i:self.i + 1] == "-"
            self._take(1 if strip else 0)
            word = re.match(r"[ \t]*((?:[^\s;&|<>()]|\\.)+)", self.text[self.i:])
            if word:
                self.heredocs.append((re.sub(r"['\"\\]", "", word.group(1)), strip))

    def _take(self, n: int) -> None:
        chunk = self.text[self.i:self.i + n]
        self.out.append(chunk)
        self.line += chunk.count("\n")
        self.i += n

    def _heredoc_line(self) -> None:
        """One line of a here-document's body (a value there is refused by _value)."""
        end = self.text.find("\n", self.i)
        end = len(self.text) if end < 0 else end
        body = self.text[self.i:end]
        if self.open in body:
            self.i += body.index(self.open)
            self._value()
        delimiter, strip = self.heredocs[0]
        self._take(end - self.i + 1)
        if (body.lstrip("\t") if strip else body) == delimiter:
            self.heredocs.pop(0)
            if not self.heredocs:
                self.stack.pop()


def _rt_names(value: str, mark: str) -> list[str]:
    return [name for m, name in MARKER_RE.findall(value) if m == mark]


def _fences(mark: str) -> tuple[str, str]:
    """What a `{{ ... }}` value is wrapped in while its run renders: private-use characters and the run's mark,
    which no value can spell (the mark is a hash of the values)."""
    return "\ue000" + mark, mark + "\ue001"

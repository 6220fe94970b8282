"""Jinja environment for the remote scripts (StrictUndefined, shell-quote filters). Pure.

Templates live in `remote_templates/` at the top of the checkout and ship inside the wheel as
`wfops/remote_templates/`. Every value a template puts into shell code goes through `q` or `qpath`
(tests/unit/test_templates.py checks this for every `{{ ... }}` in every template). Jinja is imported, and a
template compiled, only when a script is rendered and not found in the script cache (`render`): a rendered
script is kept under the hash of the templates and its context, so a repeated command imports no Jinja.

The agent travels only when the pod lacks it: scripts carry its content hash and a short boot program
(BOOT); on a pod without that hash the boot program asks for it (`@wfops-need agent` on stderr) and reads the
tarball (one base64 line, `Agent.line()`) from the same stdin, in the same exec.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from wfops import __version__
from wfops.agent.launch import call_for
from wfops.transport.shell import q, qpath

if TYPE_CHECKING:
    import jinja2

BASE_TEMPLATE = "_command.sh.j2"
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # wfops/


def templates_dir() -> Path:
    here = PACKAGE_DIR
    for candidate in (here / "remote_templates", here.parent / "remote_templates"):
        if (candidate / BASE_TEMPLATE).is_file():
            return candidate
    raise RuntimeError(f"wfops is installed without its remote_templates (looked beside {here})")


def b64(text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
    return base64.b64encode(data).decode("ascii")


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        comment_start_string="{##",  # bash's ${#array[@]} must not open a Jinja comment
        comment_end_string="##}",
    )
    env.filters["q"] = q
    env.filters["qpath"] = qpath
    env.filters["b64"] = b64
    return env


AGENT_PACKAGE = "wfops_agent"  # the agent's package name on the pod (wfops.agent here)
# How scripts call the installed agent: `python3 -I -S -c CALL AGENT_DIR`. Importing it (rather than running
# a script) lets Python keep its bytecode in the agent's directory.
AGENT_CALL = call_for(AGENT_PACKAGE)
NEED_AGENT = "need"  # `@wfops-need agent`: the meta line of a pod that lacks this agent
# What scripts run: AGENT_CALL, preceded by the install of a missing agent. The first stdin line is the request;
# on a pod without the agent it is kept, `@wfops-need agent` goes to stderr, and the next line is the agent's
# tar.gz in base64, unpacked next to its final place and renamed into it (a racing install keeps the other's).
# A Ctrl-C that reaches the agent (on the `local` target, a terminal's Ctrl-C reaches the whole process group) ends
# it quietly with 130: the client says the one line.
BOOT = (
    "import os,signal,sys\n"
    "signal.signal(signal.SIGINT,lambda*a:sys.exit(130))\n"
    "d=sys.argv[1]\n"
    "if not os.path.isfile(d+'/.complete'):\n"
    " import base64,io,shutil,tarfile,tempfile\n"
    " r=sys.stdin.buffer.readline()\n"
    " sys.stderr.write('@wfops-" + NEED_AGENT + " agent\\n');sys.stderr.flush()\n"
    " p=sys.stdin.buffer.readline()\n"
    " try:\n"
    "  t=tempfile.mkdtemp(dir=os.path.dirname(d),prefix=os.path.basename(d)+'.new.')\n"
    "  a=tarfile.open(fileobj=io.BytesIO(base64.b64decode(p)),mode='r:gz')\n"
    "  a.extraction_filter=getattr(tarfile,'data_filter',None);a.extractall(t)\n"
    "  open(t+'/.complete','w').close()\n"
    " except Exception as e:\n"
    "  sys.stderr.write('@wfops-error 6 cannot unpack the wfops agent in %s (disk full?): %s\\n'%(d,e));sys.exit(6)\n"
    " try:\n"
    "  os.rename(t,d);sys.stderr.write('@wfops-installed %s\\n'%d)\n"
    " except OSError:\n"
    "  shutil.rmtree(t,ignore_errors=True)\n"
    " sys.stdin=io.TextIOWrapper(io.BytesIO(r))\n"
    + AGENT_CALL.replace("; ", "\n")
)


@dataclass(frozen=True)
class Agent:
    sha: str  # first 16 hex digits of the sha256 of the agent's sources (names and contents)
    call: str = BOOT

    def line(self) -> bytes:
        """The agent as the boot program reads it: its tar.gz in base64, one line (made only when a pod asks)."""
        return agent_payload().encode("ascii") + b"\n"


def agent_sources() -> list[Path]:
    return sorted((PACKAGE_DIR / "agent").glob("*.py"))


@lru_cache(maxsize=1)
def _sources() -> tuple[tuple[str, bytes], ...]:
    return tuple((path.name, path.read_bytes()) for path in agent_sources())


@lru_cache(maxsize=1)
def agent() -> Agent:
    """The agent as scripts name it: by the content hash of its sources."""
    digest = hashlib.sha256()
    for name, data in _sources():
        digest.update(name.encode() + b"\0" + data + b"\0")
    return Agent(digest.hexdigest()[:16])


@lru_cache(maxsize=1)
def agent_payload() -> str:
    """The agent as it travels: a deterministic tarball (fixed mtimes and owners), gzip, base64. (gzip, io and
    tarfile are imported here: only a pod without the agent needs them, and a warm command should not pay.)"""
    import gzip
    import io
    import tarfile

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in _sources():
            info = tarfile.TarInfo(f"{AGENT_PACKAGE}/{name}")
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return b64(gzip.compress(raw.getvalue(), mtime=0))


def render(template: str, **context: object) -> str:
    """The rendered script; from the script cache when this template (and every template it may extend) was
    rendered with the same context before, so a warm command imports no Jinja."""
    context.setdefault("version", __version__)
    key = hashlib.sha256(_templates_digest() + template.encode() + b"\0"
                         + json.dumps(context, sort_keys=True, default=repr).encode()).hexdigest()[:32]
    cache = script_cache_dir()
    cached = _read_cached(cache / key)
    if cached is not None:
        return cached
    text = environment().get_template(template).render(**context)
    _write_cached(cache, key, text)
    return text


def _read_cached(path: Path) -> str | None:
    """A cached script, or None when there is none or it is not whole: each entry starts with the sha256 of the
    script (one line), so a damaged or half-written entry is rendered again, never sent to the pod (a script cut
    short leaves the request line to the pod's bash: see request_line)."""
    try:
        head, sep, text = path.read_bytes().partition(b"\n")
    except OSError:
        return None
    if not sep or hashlib.sha256(text).hexdigest().encode() != head:
        return None
    try:
        return text.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _write_cached(cache: Path, key: str, text: str) -> None:
    """Write whole or not at all, from a temporary file of this writer alone (O_EXCL): a fleet command renders the same
    script in several threads at once, and a temporary name shared by them (the PID's) let one thread truncate
    the file another had just renamed into place, so a third read an empty script. A cache that cannot be
    written only costs the next command a render."""
    data = text.encode("utf-8")
    tmp = cache / f".{key}.{os.getpid()}.{os.urandom(8).hex()}"  # no `tempfile` import: a warm command is lean
    try:
        cache.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError:
        return
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(hashlib.sha256(data).hexdigest().encode() + b"\n" + data)
        os.replace(tmp, cache / key)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def script_cache_dir() -> Path:
    """Rendered scripts, named by the hash of the templates and the context: `$XDG_CACHE_HOME/wfops/scripts`."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "wfops" / "scripts"


@lru_cache(maxsize=1)
def _templates_digest() -> bytes:
    digest = hashlib.sha256()
    for path in sorted(templates_dir().iterdir()):
        if path.is_file():
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.digest()

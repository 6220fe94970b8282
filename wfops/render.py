"""Jinja environment for the remote scripts (StrictUndefined, shell-quote filters). Pure.

Templates live in `remote_templates/` at the top of the checkout and ship inside the wheel as
`wfops/remote_templates/`. Every value a template puts into shell code goes through `q` or `qpath`
(tests/unit/test_templates.py checks this for every `{{ ... }}` in every template).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import jinja2

from . import __version__
from .agent.launch import call_for
from .shell import q, qpath

BASE_TEMPLATE = "_command.sh.j2"


def templates_dir() -> Path:
    here = Path(__file__).resolve().parent
    for candidate in (here / "remote_templates", here.parent / "remote_templates"):
        if (candidate / BASE_TEMPLATE).is_file():
            return candidate
    raise RuntimeError(f"wfops is installed without its remote_templates (looked beside {here})")


def b64(text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
    return base64.b64encode(data).decode("ascii")


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
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


@dataclass(frozen=True)
class Agent:
    sha: str  # first 16 hex digits of the sha256 of the agent's sources (names and contents)
    payload: str  # tar.gz + base64 of wfops_agent/*.py, unpacked on the pod with `base64 -d | tar -xz`
    call: str = AGENT_CALL


def agent_sources() -> list[Path]:
    return sorted((Path(__file__).resolve().parent / "agent").glob("*.py"))


@lru_cache(maxsize=1)
def agent() -> Agent:
    """The agent as it travels: a deterministic tarball (fixed mtimes and owners), named by content hash."""
    digest = hashlib.sha256()
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for path in agent_sources():
            data = path.read_bytes()
            digest.update(path.name.encode() + b"\0" + data + b"\0")
            info = tarfile.TarInfo(f"{AGENT_PACKAGE}/{path.name}")
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return Agent(digest.hexdigest()[:16], b64(gzip.compress(raw.getvalue(), mtime=0)))


def json_line(value: object) -> str:
    """A value as one line of JSON (the agent's request, sent after the script on the same stdin)."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def render(template: str, **context: object) -> str:
    context.setdefault("version", __version__)
    return environment().get_template(template).render(**context)

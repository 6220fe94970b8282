"""Jinja environment for the remote scripts (StrictUndefined, shell-quote filters). Pure.

Templates live in `remote_templates/` at the top of the checkout and ship inside the wheel as
`wfops/remote_templates/`. Every value a template puts into shell code goes through `q` or `qpath`
(tests/unit/test_templates.py checks this for every `{{ ... }}` in every template).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import jinja2

from . import __version__
from .shell import q, qpath

HELPER_NAME = "wfops_pod.py"


def templates_dir() -> Path:
    here = Path(__file__).resolve().parent
    for candidate in (here / "remote_templates", here.parent / "remote_templates"):
        if (candidate / HELPER_NAME).is_file():
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


# How scripts call the installed helper: `python3 -I -S -c CALL HELPER_PATH args...`. Importing it (rather
# than running it as a script) lets Python keep its bytecode: ~30 ms instead of ~80 ms a call here.
HELPER_CALL = ("import sys, os, importlib; p = sys.argv.pop(1); sys.path.insert(0, os.path.dirname(p)); "
               "importlib.import_module(os.path.basename(p)[:-3]).main()")


@dataclass(frozen=True)
class Helper:
    sha: str  # first 16 hex digits of the helper's sha256
    payload: str  # gzip + base64, unpacked on the pod with `base64 -d | gzip -dc`
    call: str = HELPER_CALL


@lru_cache(maxsize=1)
def helper() -> Helper:
    raw = (templates_dir() / HELPER_NAME).read_bytes()
    return Helper(hashlib.sha256(raw).hexdigest()[:16], b64(gzip.compress(raw, mtime=0)))


def render(template: str, **context: object) -> str:
    context.setdefault("version", __version__)
    return environment().get_template(template).render(**context)

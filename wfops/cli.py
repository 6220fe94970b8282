"""The `wfops` console script: the same task tree as `inv`, without needing a tasks.py."""

from __future__ import annotations

from invoke import Program

from . import __version__
from .tasks import ns

program = Program(namespace=ns, version=__version__, name="wfops", binary="wfops")


def main() -> None:
    program.run()

"""A run's training argv, the parts both sides share: TRAIN_SCRIPT as words, and the run's placeholders.

TRAIN_SCRIPT is a command prefix split like a shell line (shlex), never run by a shell: `train.py`,
`main.py --epochs 1`, `-m pkg.train`. The client checks it with script_words() before anything is sent;
the agent splits it again when it builds argv.

Placeholders: an override word may name the run's own values in braces, `--save={out_dir}/model.pt`. The
client refuses an unknown name (problem()); the pod, which alone knows its paths, fills them in (expand()) in
each argv word; no shell sees the result. `{{` and `}}` are literal braces; a lone brace is refused.
"""

from __future__ import annotations

import os
import re
import shlex

from .wire import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any, Dict, List, Match, Optional, Tuple

PLACEHOLDERS = {
    "run_dir": "the run's directory on the pod (status.json, stdout.log, command.sh; what run.fetch brings home)",
    "out_dir": "where the run trains into: its run dir, or its dir under RUN_OUT_LOCAL_ROOT (local_sync)",
    "run_id": "the run's id (RUN_ID.nodeK on node K >= 1 of a multi-node run)",
    "seed": "the CSV's seed",
    "data_dir": "DATA_DIR",
    "workdir": "the training workdir on the pod (OPS_REMOTE_REPO/TRAIN_WORKDIR)",
}
_TOKEN_RE = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


def script_words(train_script: str) -> List[str]:
    """TRAIN_SCRIPT as argv words; ValueError (in words) when it has none or cannot be split."""
    if "\x00" in train_script:
        raise ValueError("it holds a NUL character")
    try:
        words = shlex.split(train_script, posix=True)
    except ValueError as exc:
        raise ValueError("it cannot be split into words (%s)" % exc) from None
    if not words:
        raise ValueError("it is empty")
    return words


def script_file(words: List[str]) -> Optional[str]:
    """The file TRAIN_SCRIPT runs, relative to the workdir (None for `-m module` or `-c code`)."""
    return None if words[0].startswith("-") else words[0]


def missing_script(train_script: str, workdir: str) -> str:
    """Why TRAIN_SCRIPT cannot run in the workdir ("" when its file is there, or it runs a module)."""
    try:
        script = script_file(script_words(train_script))
    except ValueError as exc:
        return "TRAIN_SCRIPT %r: %s" % (train_script, exc)
    if script is not None and not os.path.isfile(os.path.join(workdir, script)):
        return ("the training script %s is not in %s; check TRAIN_WORKDIR / TRAIN_SCRIPT and run checkout"
                % (script, workdir))
    return ""


def missing_configs(configs: List[Tuple[Any, str]], workdir: str) -> List[str]:
    """`line N: config C does not exist in W` for each (line, config) whose file is not in the workdir (an empty
    config is no argument: nothing to find)."""
    present: Dict[str, bool] = {}
    out = []
    for line, config in configs:
        if config and config not in present:
            present[config] = os.path.isfile(os.path.join(workdir, config))
        if config and not present[config]:
            out.append("line %s: config %s does not exist in %s" % (line, config, workdir))
    return out


def names(word: str) -> List[str]:
    """The placeholder names a word uses, in order."""
    return [m.group(1) for m in _TOKEN_RE.finditer(word) if m.group(1) is not None]


def problem(word: str) -> str:
    """Why a word's braces are not placeholders ("" when they are fine)."""
    for m in _TOKEN_RE.finditer(word):
        token, name = m.group(0), m.group(1)
        if token in ("{{", "}}"):
            continue
        if name is None:
            return "a lone %r (write %s for a literal brace)" % (token, token * 2)
        if name not in PLACEHOLDERS:
            return "unknown placeholder {%s} (known: %s; write {{ and }} for literal braces)" % (
                name, ", ".join("{%s}" % n for n in PLACEHOLDERS))
    return ""


def expand(word: str, values: Dict[str, str]) -> str:
    """`word` with each placeholder replaced by its value and `{{`/`}}` made single (a name without a value,
    which the client's check keeps out, stays as written)."""
    def one(m: Match[str]) -> str:
        token, name = m.group(0), m.group(1)
        if token in ("{{", "}}"):
            return token[0]
        if name is not None and name in values:
            return values[name]
        return token

    return _TOKEN_RE.sub(one, word)


def escape(text: str) -> str:
    """A value of wfops' own (a seed, a W&B group) as a word whose braces stay literal after expand()."""
    return text.replace("{", "{{").replace("}", "}}")

"""Overrides as the training script takes them: THE one rule, for CSV cells and SWEEP_COMMON_OVERRIDES alike,
in sweep.validate, sweep.start and sweep.add. Pure.

A cell is split into argv words like a shell line (shlex: quotes group, nothing is run; `$(..)`, backquotes
and `;` are characters of a word). Each word is one of:
  key=value / --key=value   an option with a value (key: letters, digits, `_`, `.`, `-`); written in the
                            TRAIN_ARG_STYLE: `key=value` (bare) or `--key=value` (dashdash, argparse)
  --key / -k                a flag (TRAIN_ARG_STYLE=argparse only), passed as written
  value                     a value of the flag before it (argparse only: `--save model.pt`, `--sizes 1 2 3`)
A key may repeat (an argparse `append` option); a key that SWEEP_COMMON_OVERRIDES sets and the row sets too
is the row's. Braces are the run's placeholders (wfops.agent.argv): an unknown one is refused here.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass

from wfops.agent import argv as pod_argv

STYLES = ("bare", "dashdash", "argparse")
MAX_OVERRIDES = 64 * 1024  # characters of one cell (Linux takes 128 KiB per argv word, 2 MiB in all)
_KEY = r"[A-Za-z_][A-Za-z0-9_.-]*"
_PAIR_RE = re.compile(rf"^(?:--)?({_KEY})=(.*)$", re.DOTALL)
_FLAG_RE = re.compile(rf"^--?({_KEY})$")
_SPACE = re.compile(r"[ \t\r\n]+")
INJECTED_KEYS = {"out_dir": "out_dir", "data_dir": "data_dir", "seed": "seed", "wandb_log": "wandb",
                 "wandb_group": "wandb", "wandb_run_name": "wandb", "wandb_project": "wandb"}


@dataclass(frozen=True)
class Override:
    """One option of a run: `key=value` (pair) or a flag with its value words (`--tied`, `--save a.pt`)."""

    key: str  # without leading dashes: "lr", "log-interval", "tied"
    values: tuple[str, ...]  # the pair's value, or the flag's value words (none for a bare flag)
    flag: str = ""  # the flag as written ("--tied", "-v"); "" for a pair

    def words(self, style: str) -> list[str]:
        """The argv words of this override in TRAIN_ARG_STYLE `style`."""
        if self.flag:
            return [self.flag, *self.values]
        return [format_pair(style, self.key, self.values[0])]

    def text(self) -> str:
        """How the manifest and results.csv name it: `key=value`, `key=v1 v2`, or `--flag`. Not one name per
        argv: `--sizes 1 2`, `--sizes="1 2"` and `-sizes 1 2` all read `sizes=1 2` (the fingerprint: `identity`)."""
        if self.flag and not self.values:
            return self.flag
        return f"{self.key}={' '.join(self.values)}"

    def identity(self) -> str | list[str]:
        """How the fingerprint names it: one name per meaning of its argv. `text()` where that names one meaning (a
        pair: `key=value`, written as the style writes it; a flag alone: `--tied`; a long flag with one value of one
        word, `--lr 20`, which argparse reads as it reads the pair `--lr=20`), so their fingerprints stay what they
        always were; any other flag with values by its words as written (`["--sizes", "1", "2"]`, `["-s", "1"]`,
        `["--note", "a b"]`): its text is also the text of `--sizes="1 2"`, of `--s 1`, of `--note a b`."""
        if not (self.flag and self.values):
            return self.text()
        one_word = len(self.values) == 1 and self.values[0] != "" and not _SPACE.search(self.values[0])
        return self.text() if self.flag.startswith("--") and one_word else [self.flag, *self.values]

    def value(self) -> str:
        """The value a template or a report shows: the values joined by spaces, `true` for a bare flag."""
        return " ".join(self.values) if self.values or not self.flag else "true"


def format_pair(style: str, key: str, value: str) -> str:
    return f"{key}={value}" if style == "bare" else f"--{key}={value}"


def split_words(text: str) -> list[str]:
    """A cell's words; ValueError (in words) when it cannot be split."""
    if "\x00" in text:
        raise ValueError("hold a NUL character, which no argument can carry")
    if len(text) > MAX_OVERRIDES:
        raise ValueError(f"are {len(text):,} characters; at most {MAX_OVERRIDES:,}")
    if not any(ch in text for ch in "'\"\\"):  # the common case: split like shlex, without its per-char loop
        return [w for w in _SPACE.split(text) if w]
    try:
        return shlex.split(text, posix=True)
    except ValueError as exc:
        raise ValueError(f"cannot be split into words ({exc})") from None


def _is_flag(word: str) -> bool:
    return bool(_FLAG_RE.match(word)) and not _is_number(word)


def _is_number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True


def parse(text: str, style: str, injected: Iterable[str] = ()) -> tuple[tuple[Override, ...], str | None]:
    """(overrides, None), or ((), why) for the first bad word. The one rule of every override."""
    try:
        words = split_words(text)
    except ValueError as exc:
        return (), f"overrides {exc}: {text[:200]!r}"
    out: list[Override] = []
    injected = set(injected)
    open_flag: Override | None = None  # the argparse flag that the next plain words are values of
    for word in words:
        pair = _PAIR_RE.match(word)
        if pair and not (open_flag is not None and not word.startswith("-")):
            out.append(Override(pair.group(1), (pair.group(2),)))
            open_flag = None
        elif _is_flag(word):
            if style != "argparse":
                return (), (f"override {word!r} is a flag: TRAIN_ARG_STYLE=argparse passes flags and `--key value` "
                            f"pairs as written (TRAIN_ARG_STYLE={style} writes key=value pairs only)")
            open_flag = Override(word.lstrip("-"), (), word)
            out.append(open_flag)
        elif open_flag is not None:
            open_flag = Override(open_flag.key, (*open_flag.values, word), open_flag.flag)
            out[-1] = open_flag
        else:
            after = " nor the value of a --flag before it" if style == "argparse" else ""
            return (), f"override {word[:200]!r} is not key=value{after}"
    for o in out:
        if INJECTED_KEYS.get(o.key) in injected:
            column = "the seed column" if o.key == "seed" else "wfops (TRAIN_INJECT)"
            return (), f"override {o.key} is set by {column}; remove it from overrides"
        for word in o.words(style):
            bad = pod_argv.problem(word)
            if bad:
                return (), f"override {o.key}: {bad}"
    return tuple(out), None


def needs_seed(overrides: Iterable[Override]) -> str:
    """The key of the first override that uses {seed} ("" when none does)."""
    for o in overrides:
        if any("seed" in pod_argv.names(w) for w in o.words("argparse")):
            return o.key
    return ""


def merged(common: tuple[Override, ...], own: tuple[Override, ...]) -> tuple[Override, ...]:
    """SWEEP_COMMON_OVERRIDES then the row's own; a key the row sets (once or more) is the row's only."""
    keys = {o.key for o in own}
    return tuple(o for o in common if o.key not in keys) + own

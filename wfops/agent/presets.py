"""Named metric presets: the log-line shapes of common training scripts, beside the user's METRIC_PATTERNS.

    nanogpt           `iter 10: loss 4.2345, time 12.3ms, mfu 1.2%` (loss) and
                      `step 250: train loss 1.92, val loss 2.01` (train_loss, val_loss)
    pytorch-examples  word_language_model's `| end of epoch 1 | time: 5.2s | valid loss 5.66 | valid ppl 287.65`
                      (valid_loss, valid_ppl; step: the epoch), its batch lines `| epoch 1 | 200/2983 batches | lr 20.00
                      | ms/batch 45.1 | loss 7.63 | ppl 2065.46` (loss, ppl), `| End of training | test loss ...
                      | test ppl ...`; mnist's `Train Epoch: 1 [...] Loss: 2.30` and `Test set: Average loss: 0.05,
                      Accuracy: 9834/10000 (98%)` (test_loss, test_accuracy)
    json              a line that is a JSON object, or a Python dict (`{'loss': 0.69, 'epoch': 1.0}`, as Hugging Face's
                      Trainer prints): its numbers, the step from step/global_step/iter/iteration/it/epoch
    kv                two or more `name=number` / `name: number` pairs on one line (`step=10 loss=2.31 lr=3e-4`,
                      `epoch: 3  acc: 0.91  loss: 0.25`); the step as for json

On the wire a preset is `@name` among the patterns (a real pattern has a named group, so it never starts so). Each
line of a log gives its metrics to the first that matches: the user's patterns (all of them that match, as they
always did), else the presets in the order named. Standard library only, Python >= 3.8.
"""

from __future__ import annotations

import json
import math
import re

from .wire import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Iterable, List, Optional, Pattern, Sequence, Tuple

    Point = Tuple[str, Optional[float], float]  # (metric, step or None, value)

MARK = "@"
NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
JSONL_STEP_KEYS = ("step", "iter", "iteration", "it")  # metrics.jsonl's step, as it always was
STEP_KEYS = ("step", "global_step", "iter", "iteration", "it", "epoch")  # a log line's: an epoch is a step too
STAMP_RE = re.compile(r"^\d{4}-\d\d-\d\dT[\d:.]+(?:Z|[+-]\d\d:\d\d) ")  # the time stamps of stdout.log
PREFIX_RE = re.compile(r"^(?:\[rank\d+\]:\s?)+")
KV_RE = re.compile(r"(?<![\w./-])([A-Za-z_][\w./-]*)(?:=|:\s*)(" + NUM + r")(?![\w.:/-])")
MAX_RECORD = 20000  # longer lines are no metrics record

REGEX_PRESETS: Dict[str, Tuple[str, ...]] = {
    "nanogpt": (
        r"\biter (?P<step>\d+): loss (?P<loss>" + NUM + r")",
        r"\bstep (?P<step>\d+): train loss (?P<train_loss>" + NUM + r"), val loss (?P<val_loss>" + NUM + r")",
    ),
    "pytorch-examples": (
        r"(?i)\|\s*end of epoch\s+(?P<step>\d+)\s*\|.*?\|\s*valid loss\s+(?P<valid_loss>" + NUM
        + r")\s*\|\s*valid ppl\s+(?P<valid_ppl>" + NUM + r")",
        r"\|\s*epoch\s+\d+\s*\|\s*\d+\s*/\s*\d+\s+batches\s*\|.*?\|\s*loss\s+(?P<loss>" + NUM
        + r")\s*\|\s*ppl\s+(?P<ppl>" + NUM + r")",
        r"(?i)\|\s*end of training\s*\|\s*test loss\s+(?P<test_loss>" + NUM + r")\s*\|\s*test ppl\s+(?P<test_ppl>"
        + NUM + r")",
        r"^Train Epoch: \d+ \[\d+/\d+ \(\d+%\)\]\s+Loss: (?P<loss>" + NUM + r")",
        r"^Test set: Average loss: (?P<test_loss>" + NUM + r"), Accuracy: \d+/\d+ \((?P<test_accuracy>" + NUM
        + r")%\)",
    ),
}
DEFAULT_PRESETS = ("nanogpt", "pytorch-examples", "json", "kv")  # what METRIC_PRESETS=default means


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        out = float(value)
    except ValueError:
        return None
    return out if math.isfinite(out) else None


def body(line: str) -> str:
    """A log line without its time stamp and torchrun's rank prefixes."""
    return PREFIX_RE.sub("", STAMP_RE.sub("", line)).strip()


def record_points(record: Dict[str, Any], step_keys: Sequence[str] = STEP_KEYS) -> List[Point]:
    """The numbers of one record (a metrics.jsonl line, a JSON log line): the step from the first step key."""
    key = next((k for k in step_keys if _number(record.get(k)) is not None), None)
    step = _number(record[key]) if key else None
    out: List[Point] = []
    for name, raw in record.items():
        value = _number(raw) if not isinstance(raw, str) else None
        if name != key and value is not None:
            out.append((str(name), step, value))
    return out


def json_line(line: str) -> Optional[List[Point]]:
    text = body(line)
    if not (text.startswith("{") and text.endswith("}")) or len(text) > MAX_RECORD:
        return None
    try:
        record = json.loads(text)
    except ValueError:
        import ast  # here: sweep.status imports this module on every call, and a dict's repr is the rare case

        try:
            record = ast.literal_eval(text)  # a Python dict's repr; literals only, nothing runs
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return None
    if not isinstance(record, dict):
        return None
    return record_points(record) or None


def kv_line(line: str) -> Optional[List[Point]]:
    text = body(line)
    if "Namespace(" in text or len(text) > MAX_RECORD:  # argparse's print(args): settings, not metrics
        return None
    pairs = KV_RE.findall(text)
    if len(pairs) < 2:
        return None
    record: Dict[str, Any] = {}
    for name, raw in pairs:
        record.setdefault(name, float(raw))
    return record_points(record) or None


LINE_PRESETS: Dict[str, Callable[[str], Optional[List[Point]]]] = {"json": json_line, "kv": kv_line}
NAMES = tuple(REGEX_PRESETS) + tuple(LINE_PRESETS)


def regex_points(patterns: Sequence[Pattern[str]], line: str, every: bool) -> Optional[List[Point]]:
    """The metrics of the patterns that match `line` (every one of them, or the first); None when none does."""
    out: Optional[List[Point]] = None
    for pattern in patterns:
        found = pattern.search(line)
        if not found:
            continue
        groups = found.groupdict()
        step = _number(groups.pop("step", None))
        out = out or []
        out.extend((name, step, v) for name, raw in groups.items() if (v := _number(raw)) is not None)
        if not every:
            break
    return out


_COMPILED: Dict[str, List[Pattern[str]]] = {}  # a regex preset's patterns, compiled once a process


def regexes(name: str) -> List[Pattern[str]]:
    """The compiled patterns of regex preset `name` (the kept agent compiles them all once, before its first
    request: serve.py; each request's child would compile them again, ~3 ms)."""
    if name not in _COMPILED:
        _COMPILED[name] = [re.compile(p) for p in REGEX_PRESETS[name]]
    return _COMPILED[name]


class Extractor:
    """The user's patterns and the presets named, compiled: `points(line)` is a log line's metrics."""

    def __init__(self, patterns: Iterable[Any]) -> None:
        self.own: List[Pattern[str]] = []
        self.rules: List[Callable[[str], Optional[List[Point]]]] = []
        texts = [str(p) for p in patterns]
        self.key = repr(texts)  # what the patterns are (filecache keeps a log's last values under it)
        for text in texts:
            if text.startswith(MARK):
                self._preset(text[len(MARK):])
                continue
            try:
                self.own.append(re.compile(text))
            except re.error:
                continue

    def _preset(self, name: str) -> None:
        if name in REGEX_PRESETS:
            compiled = regexes(name)
            self.rules.append(lambda line: regex_points(compiled, body(line), every=False))
        elif name in LINE_PRESETS:
            self.rules.append(LINE_PRESETS[name])

    def __bool__(self) -> bool:
        return bool(self.own or self.rules)

    def points(self, line: str) -> List[Point]:
        got = regex_points(self.own, line, every=True) if self.own else None
        if got is not None:
            return got
        for rule in self.rules:
            got = rule(line)
            if got is not None:
                return got
        return []

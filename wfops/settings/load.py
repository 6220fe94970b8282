"""The dotenv config file -> `Settings` (model.py): finding the file, parsing, `${}` expansion, each key's check.

One file is the whole configuration (SPEC §3). Values may reference other keys, wfops defaults or the
process environment as ``${VAR}`` or ``${VAR:-fallback}``; single-quoted values are taken literally;
a bare ``$`` is literal. Unknown keys warn with the closest known key and are still passed to the pod
environment (list intentional extras in ``EXTRA_ENV_KEYS`` to silence the warning).
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from wfops.errors import ConfigError
from wfops.settings.checks import Invalid, is_gpus_request
from wfops.settings.keys import KEYS, KEYS_BY_NAME, Key
from wfops.settings.model import Settings, invalid_line
from wfops.settings.secrets import is_secret, secret_by_shape


def _dotenv_parser() -> ModuleType:
    """python-dotenv's parser module (self-contained: codecs, re, typing) without the package's __init__, which
    imports dotenv.main and with it logging, tempfile and more: about a third of a warm command's imports
    (wfops.lean). A later `import dotenv` finds this very module in sys.modules."""
    name = "dotenv.parser"
    if name not in sys.modules:
        package = importlib.util.find_spec("dotenv")  # a top-level package's spec: nothing is imported
        where = next(iter(package.submodule_search_locations or ()), None) if package else None
        spec = importlib.util.spec_from_file_location(name, os.path.join(where, "parser.py")) if where else None
        if spec is None or spec.loader is None:
            import dotenv.parser

            return dotenv.parser
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return sys.modules[name]


parse_stream = _dotenv_parser().parse_stream

__all__ = ["KEYS", "KEYS_BY_NAME", "Key", "Settings", "find_config", "is_gpus_request", "load_settings",
           "parse_settings"]

CONFIG_ENV_VAR = "WORKFLOW_CONFIG"
DEFAULT_LOCATIONS = ("workflow.env", "infra_scripts/workflow.env")

_KEY_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_REF_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


# ---------------------------------------------------------------- file discovery

def find_config(explicit: str | None, cwd: Path, environ: Mapping[str, str],
                consumer_default: str | None = None) -> Path:
    """--config > $WORKFLOW_CONFIG > the consumer's invoke config > ./workflow.env > infra_scripts/workflow.env."""
    for origin, candidate in (("--config", explicit), (CONFIG_ENV_VAR, environ.get(CONFIG_ENV_VAR)),
                              ("wfops.config", consumer_default)):
        if candidate:
            path = (cwd / os.path.expanduser(candidate)).resolve()
            if not path.is_file():
                raise ConfigError(f"config file not found: {candidate} (from {origin})")
            return path
    for rel in DEFAULT_LOCATIONS:
        if (cwd / rel).is_file():
            return (cwd / rel).resolve()
    raise ConfigError(
        "no config file: create ./workflow.env (`wfops config.init` writes one with every key) "
        f"or point {CONFIG_ENV_VAR} / --config at one"
    )


# ---------------------------------------------------------------- parsing and expansion

@dataclass(frozen=True)
class _Entry:
    value: str
    literal: bool  # single-quoted: no ${} expansion
    line: int


def _parse(text: str, source: str) -> dict[str, _Entry]:
    import io

    entries: dict[str, _Entry] = {}
    unparsed: tuple[int, str] | None = None  # the first line that does not parse (said after the rest is read)
    for binding in parse_stream(io.StringIO(text)):
        line = binding.original.line
        if binding.error:
            unparsed = unparsed or (line, _what_is_wrong(binding.original.string))
            continue
        if binding.key is None:
            continue
        if not _KEY_NAME_RE.match(binding.key):
            if unparsed is not None:
                break
            raise ConfigError(f"{source} line {line}: invalid key name {binding.key!r}")
        if binding.value is None:  # a bare word: a value that cannot reach anything, most likely a broken line
            word = binding.key if binding.key in KEYS_BY_NAME else "a word"  # a pasted token is a word too
            unparsed = unparsed or (line, f"{word} with no `=` (write KEY=VALUE)")
            continue
        raw_rhs = binding.original.string.split("=", 1)[1].lstrip() if "=" in binding.original.string else ""
        entries[binding.key] = _Entry(binding.value or "", raw_rhs.startswith("'"), line)
    if unparsed is not None:
        raise ConfigError(f"{source} line {unparsed[0]}: cannot parse: {unparsed[1]}")
    return entries


_LINE_KEY_RE = re.compile(r"""\s*(?:export\s+)?(['"]?)([A-Za-z_][A-Za-z0-9_]*)\1\s*=\s*(.*)""")


def _what_is_wrong(original: str) -> str:
    """What is wrong with a binding that does not parse, in words that never quote its text: a missing closing
    quote runs on to the next quote in the file, so the text may hold the secret values of the lines it took in."""
    first = original.split("\n", 1)[0]
    m = _LINE_KEY_RE.match(first)
    if m is None:
        return "expected KEY=VALUE"
    key, value = m.group(2), m.group(3)
    quote = value[:1]
    if quote in ("'", '"'):
        if quote not in re.sub(r"\\.", "", value[1:]):  # \' and \" do not close it
            return (f"the {quote} quote that opens {key}'s value is not closed on that line (a missing closing "
                    f"quote takes in the lines after it up to the next {quote}): close it")
        return f"{key}'s value has text after its closing {quote} quote (put the whole value inside the quotes)"
    return f"{key}'s value is not valid (quote it if it holds spaces, quotes or #)"


class _Resolver:
    def __init__(self, entries: Mapping[str, _Entry], environ: Mapping[str, str], source: str) -> None:
        self.entries = entries
        self.environ = environ
        self.source = source
        self.done: dict[str, str] = {}
        self.active: list[str] = []
        self.env_secrets: dict[str, str] = {}  # secret-named variables of the environment that a key refers to

    def value(self, name: str) -> str | None:
        if name in self.done:
            return self.done[name]
        entry = self.entries.get(name)
        if entry is not None:
            raw, literal, where = entry.value, entry.literal, f"{self.source} line {entry.line}"
        elif name in KEYS_BY_NAME:
            raw, literal, where = KEYS_BY_NAME[name].default, False, f"default of {name}"
        elif name in self.environ:
            if is_secret(name):
                self.env_secrets[name] = self.environ[name]
            return self.environ[name]
        else:
            return None
        if name in self.active:
            chain = " -> ".join([*self.active[self.active.index(name):], name])
            raise ConfigError(f"config: circular reference {chain}")
        self.active.append(name)
        try:
            out = raw if literal else self._expand(raw, name, where)
        finally:
            self.active.pop()
        self.done[name] = out
        return out

    def _expand(self, raw: str, name: str, where: str) -> str:
        def sub(m: re.Match[str]) -> str:
            ref, fallback = m.group(1), m.group(2)
            got = self.value(ref)
            if got is not None and not _utf8(got):  # only the environment's can be (os.environ: surrogateescape)
                raise ConfigError(f"config: {name} ({where}) refers to ${{{ref}}}, and {ref} in the environment is "
                                  f"not valid UTF-8: set {ref} to UTF-8 text, or write the value in {self.source}")
            if got is None or (got == "" and fallback is not None):
                if fallback is not None:
                    return fallback
                raise ConfigError(
                    f"config: {name} ({where}) refers to ${{{ref}}}, which is not set in the file, "
                    f"the defaults or the environment (write ${{{ref}:-}} if empty is fine)"
                )
            return got

        return _REF_RE.sub(sub, raw)


def _utf8(text: str) -> bool:
    """Whether `text` is UTF-8 text: a value of the environment that is not holds surrogates (\\udcff), which no
    script, JSON or pod env file can carry."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# ---------------------------------------------------------------- settings

def parse_settings(text: str, source: str = "workflow.env", environ: Mapping[str, str] | None = None,
                   path: Path | None = None) -> Settings:
    environ = os.environ if environ is None else environ
    entries = _parse(text, source)
    resolver = _Resolver(entries, environ, source)
    values: dict[str, str] = {}
    sources: dict[str, str] = {}
    for key in KEYS:
        values[key.name] = resolver.value(key.name) or ""
        sources[key.name] = f"{source} line {entries[key.name].line}" if key.name in entries else "default"
    secrets = [resolver.value(name) or "" for name in [*KEYS_BY_NAME, *entries] if is_secret(name)]
    typed = _typed(values, sources, secrets + list(resolver.env_secrets.values()))
    _one_or_a_fleet(values)
    warnings: list[str] = []
    for name, entry in entries.items():
        if name in KEYS_BY_NAME:
            continue
        values[name] = resolver.value(name) or ""
        sources[name] = f"{source} line {entry.line}"
        if name not in typed["extra_env_keys"]:
            warnings.append(_unknown_key_warning(name, source, entry.line))
    _check_sizes(values, sources)
    return Settings(path=path, sources=sources, warnings=tuple(warnings), _raw=values,
                    _env_secrets=tuple(resolver.env_secrets.values()), **typed)


def _typed(values: Mapping[str, str], sources: Mapping[str, str], secrets: list[str]) -> dict[str, Any]:
    """Each key's check on its resolved text: {attribute: typed value}; the first refusal -> ConfigError."""
    typed: dict[str, Any] = {}
    errors: list[str] = []
    for key in KEYS:
        value = values[key.name]
        try:
            typed[key.attr] = key.typed(value)
        except Invalid as exc:
            where = f" ({sources[key.name]})" if sources[key.name] != "default" else ""
            errors.append(invalid_line(key.name, value, exc, secrets, where))
    if errors:
        raise ConfigError(errors[0] + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""))
    return typed


def _one_or_a_fleet(values: Mapping[str, str]) -> None:
    """A config names one target (LIUM_TARGET / OPS_DEFAULT_HOST) or a fleet (LIUM_TARGETS / OPS_HOSTS), never both:
    with both, a one-pod command (pod.down) and a fleet command would disagree on which pods the config means."""
    single = [k for k in ("LIUM_TARGET", "OPS_DEFAULT_HOST") if values[k].strip()]
    fleet = [k for k in ("LIUM_TARGETS", "OPS_HOSTS") if values[k].strip()]
    if single and fleet:
        one, many = single[0], fleet[0]
        raise ConfigError(f"config: {one}={values[one].strip()} and {many}={values[many].strip()} both name the "
                          f"target: set {one} (one pod) or {many} (a fleet), not both")


def _unknown_key_warning(name: str, source: str, line: int) -> str:
    import difflib  # only for a key that is unknown

    close = difflib.get_close_matches(name.upper(), KEYS_BY_NAME, n=1, cutoff=0.75)
    hint = f" (did you mean {close[0]}?)" if close else ""
    if secret_by_shape(name):
        hint += "; its value is masked (the name looks like a secret's)"
    fate = ("it stays on this machine (LIUM_* keys never reach the pod)" if name.startswith("LIUM_")
            else "it is passed to the pod environment as is (list intended extras in EXTRA_ENV_KEYS)")
    return f"config: unknown key {name} at {source} line {line}{hint}; {fate}"


# Linux refuses to start a process with one environment string (KEY=value) of 128 KiB or more (MAX_ARG_STRLEN):
# the pod env file is loaded into every run's environment, so a longer value is refused here, up front.
ENV_STRING_LIMIT = 131072


def _check_sizes(values: Mapping[str, str], sources: Mapping[str, str]) -> None:
    for name, value in values.items():
        size = len(name.encode()) + 1 + len(value.encode())
        if size >= ENV_STRING_LIMIT:
            raise ConfigError(f"config: {name} ({sources.get(name, 'default')}) is {size:,} bytes as KEY=value; "
                              f"Linux refuses environment strings of {ENV_STRING_LIMIT:,} bytes or more, so no "
                              "process on the pod could start with it. Keep big data in a file and pass its path")


def load_settings(path: Path, environ: Mapping[str, str] | None = None) -> Settings:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        line = exc.object[:exc.start].count(b"\n") + 1
        raise ConfigError(f"config file {path} is not UTF-8 text (line {line}, byte 0x{exc.object[exc.start]:02x}): "
                          "save it as UTF-8") from None
    return parse_settings(text, source=path.name, environ=environ, path=path)



"""The dotenv config file -> frozen, typed, validated settings. Pure: no fabric, no invoke.

One file is the whole configuration (SPEC §3). Values may reference other keys, wfops defaults or the
process environment as ``${VAR}`` or ``${VAR:-fallback}``; single-quoted values are taken literally;
a bare ``$`` is literal. Unknown keys warn with the closest known key and are still passed to the pod
environment (list intentional extras in ``EXTRA_ENV_KEYS`` to silence the warning).
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dotenv.parser import parse_stream

from wfops.agent.states import ALL_GPUS, CONTROL_DIR, FAILURE_CLASSES, STATE_FILE
from wfops.errors import ConfigError
from wfops.transport.shell import qpath

CONFIG_ENV_VAR = "WORKFLOW_CONFIG"
DEFAULT_LOCATIONS = ("workflow.env", "infra_scripts/workflow.env")

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off", ""})

_SECRET_RE = re.compile(r"(_KEY$|_TOKEN$|_SECRET$|PASSWORD)", re.IGNORECASE)
_KEY_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_REF_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True)
class Key:
    name: str
    default: str
    kind: str  # str | bool | int | optint | choice | rpath | lpath | host | targets | words | session | sha | pr
    help: str
    group: str
    choices: tuple[str, ...] = ()
    pod: bool = True  # written to REMOTE_ENV_PATH on the pod


def _k(group: str, name: str, default: str, kind: str, help: str, **kw: object) -> Key:
    return Key(name, default, kind, help, group, **kw)  # type: ignore[arg-type]


KEYS: tuple[Key, ...] = (
    # -- target
    _k("target", "LIUM_TARGET", "", "str",
       "Lium pod: name, UUID, huid or row number of `lium ps`; wins over OPS_DEFAULT_HOST (used instead when lium "
       "is missing or its API is down)", pod=False),
    _k("target", "LIUM_API_KEY", "", "str",
       "Lium API key for every lium call, in lium's environment only (never argv, never the pod); empty: lium's "
       "own (LIUM_API_KEY in the environment, ~/.lium/config.ini)", pod=False),
    _k("target", "LIUM_LOOKUP_TIMEOUT_SECS", "20", "int",
       "seconds a `lium ps` lookup of LIUM_TARGET may take before the Lium API counts as down (then "
       "OPS_DEFAULT_HOST, and no lookup for 30 s)", pod=False),
    _k("target", "OPS_DEFAULT_HOST", "", "host",
       "SSH fallback: an ~/.ssh/config alias, user@host[:port], or `local` for this machine", pod=False),
    _k("target", "LIUM_TARGETS", "", "targets",
       "a fleet of Lium pods, comma-separated, each named as LIUM_TARGET is; commands run on all of them "
       "(WF_POD=NAME picks one); wins over LIUM_TARGET", pod=False),
    _k("target", "OPS_HOSTS", "", "targets",
       "a fleet of SSH hosts, comma-separated, each as OPS_DEFAULT_HOST is (with LIUM_TARGETS: both join the "
       "fleet); wins over OPS_DEFAULT_HOST", pod=False),
    _k("target", "SSH_KEY_PATH", "", "lpath",
       "private key for OPS_DEFAULT_HOST (empty: ssh_config IdentityFile, then ~/.ssh defaults)", pod=False),
    _k("target", "SSH_STRICT_HOST_KEYS", "0", "bool",
       "1: refuse hosts missing from ~/.ssh/known_hosts; 0: accept new hosts (a changed key is always refused)",
       pod=False),
    _k("target", "SSH_CONNECT_TIMEOUT", "15", "int", "seconds to wait for the SSH connection", pod=False),
    _k("target", "WF_PERSIST_SECS", "300", "int",
       "seconds the SSH connection stays open after a command (a background keeper, like ControlPersist); "
       "0: none", pod=False),
    # -- lium
    _k("lium", "LIUM_POD_NAME", "", "str", "pod.up: name of the pod to rent", pod=False),
    _k("lium", "LIUM_EXECUTOR_ID", "", "str",
       "pod.up: node UUID or huid (`lium ls --format json`); a bare row number is refused", pod=False),
    _k("lium", "LIUM_GPU", "", "str", "pod.up: GPU type filter, e.g. H100", pod=False),
    _k("lium", "LIUM_COUNT", "", "optint", "pod.up: number of GPUs", pod=False),
    _k("lium", "LIUM_COUNTRY", "", "str", "pod.up: country code filter", pod=False),
    _k("lium", "LIUM_PORTS", "", "optint", "pod.up: number of extra ports", pod=False),
    _k("lium", "LIUM_TTL", "6h", "str", "pod.up: auto-remove after this long (90m, 6h, 2d; always passed)",
       pod=False),
    _k("lium", "LIUM_VOLUME", "", "str", "pod.up: volume to attach at /mnt: id:<HUID> or new:name=<NAME>",
       pod=False),
    _k("lium", "LIUM_YES", "0", "bool",
       "pod.up/pod.down: do not ask for confirmation (needed without a terminal, like --yes)", pod=False),
    # -- pod layout
    _k("layout", "REMOTE_ENV_PATH", "/mnt/project.env", "rpath",
       "where this config is written on the pod (mode 600); every remote step reads it"),
    _k("layout", "OPS_REMOTE_REPO", "~/repo", "rpath", "git checkout of REPO_URL on the pod"),
    _k("layout", "OPS_REMOTE_OUTPUTS_DIR", "/mnt/pod_artifacts/outputs", "rpath",
       "durable outputs on the pod: runs, tasks, manifests, workflow state"),
    _k("layout", "DATA_DIR", "/mnt/data/fineweb10B", "rpath", "FineWeb shards on the pod"),
    _k("layout", "HF_HOME", "/mnt/hf", "rpath", "Hugging Face cache on the pod"),
    _k("layout", "LOCAL_ARTIFACTS_DIR", "artifacts/pod_logs", "lpath",
       "run.fetch puts runs here, on this machine", pod=False),
    # -- state machine and tracked tasks
    _k("workflow", "WF_FSM_ENFORCE", "1", "bool", "1: refuse commands out of order; 0: record only"),
    _k("workflow", "WF_STATE_FILE", "", "rpath",
       "state file (empty: $OPS_REMOTE_OUTPUTS_DIR/_control/workflow_state.json)"),
    _k("workflow", "WF_TMUX_SESSION", "wf", "session", "tmux session of tracked tasks"),
    _k("workflow", "WF_TMUX_SOCKET", "", "session",
       "tmux socket name (tmux -L) for wfops sessions; empty: tmux's default server"),
    _k("workflow", "TASK_TIMEOUT_SECS", "7200", "int",
       "default timeout of task.run in seconds (0: no limit)"),
    _k("workflow", "KILL_GRACE_SECS", "20", "int", "seconds between TERM and KILL when a timeout hits"),
    # -- bootstrap
    _k("bootstrap", "PREREQ_COMMANDS", "git tmux rsync curl python3", "words",
       "bootstrap: commands the pod must have; each missing one is reported"),
    _k("bootstrap", "AUTO_INSTALL_PREREQS", "0", "bool", "bootstrap: apt-get install APT_PACKAGES if missing"),
    _k("bootstrap", "APT_PACKAGES", "git tmux rsync curl python3 python3-venv", "words",
       "bootstrap: packages installed when AUTO_INSTALL_PREREQS=1"),
    _k("bootstrap", "BOOTSTRAP_SCRIPT", "/mnt/bootstrap-pod.sh", "rpath",
       "bootstrap: run this pod script if it exists (a failure only warns)"),
    _k("bootstrap", "WANDB_SETUP_SCRIPT", "/mnt/set-wandb-api-key.sh", "rpath",
       "bootstrap: W&B setup script, run only when SWEEP_WANDB=1 or RUN_WANDB_SETUP=1"),
    _k("bootstrap", "RUN_WANDB_SETUP", "0", "bool", "bootstrap: run WANDB_SETUP_SCRIPT even without SWEEP_WANDB"),
    # -- checkout
    _k("checkout", "REPO_URL", "", "str", "git URL of the training repo (required by checkout)"),
    _k("checkout", "CHECKOUT_BRANCH", "main", "str", "branch to check out (ignored when CHECKOUT_PR is set)"),
    _k("checkout", "CHECKOUT_PR", "", "pr", "GitHub pull request number to check out (pull/N/head)"),
    _k("checkout", "EXPECT_GIT_SHA", "", "sha", "fail unless HEAD starts with this SHA"),
    _k("checkout", "CHECKOUT_FORCE_CLEAN", "0", "bool", "1: discard tracked modifications in the checkout"),
    _k("checkout", "REMOTE_PYTHON_BIN", "python3", "str",
       "python with the image's torch; the venv is made from it with --system-site-packages"),
    _k("checkout", "VENV_RECREATE", "0", "bool", "1: rebuild $OPS_REMOTE_REPO/.venv"),
    _k("checkout", "CPU_ONLY", "0", "bool",
       "1: this target has no GPU on purpose: skip the CUDA check, run torchrun on CPU (gloo)"),
    _k("checkout", "REPO_INSTALL_CMD", 'pip install -e "$OPS_REMOTE_REPO[examples]"', "str",
       "checkout: installs the repo's dependencies inside the venv (empty: skip)"),
    _k("checkout", "DOWNLOAD_FINEWEB", "0", "bool", "checkout: download a minimal shard pair if missing"),
    _k("checkout", "FINEWEB_DOWNLOAD_CMD", "python data/cached_fineweb10B.py 1", "str",
       "checkout: the repo's downloader, run in TRAIN_WORKDIR with WF_DOWNLOAD_DIR set"),
    _k("checkout", "WF_MOUNT_TABLE", "/proc/self/mounts", "rpath",
       "checkout: mount table used to tell whether DATA_DIR is on s3fs (tests point it elsewhere)"),
    _k("checkout", "DATA_LINK_DIR", "data/fineweb10B", "str",
       "checkout: where the data appears, relative to TRAIN_WORKDIR (see DATA_LINK)"),
    _k("checkout", "DATA_CHECK", "fineweb_train_*.bin fineweb_val_*.bin", "words",
       "checkout: glob patterns that must each match a file in DATA_DIR (empty: no data check)"),
    _k("checkout", "DATA_LINK", "shards", "choice",
       "checkout: shards: link each file DATA_CHECK matches into DATA_LINK_DIR; dir: DATA_LINK_DIR becomes a link "
       "to DATA_DIR; none: link nothing", choices=("shards", "dir", "none")),
    # -- sweeps
    _k("sweep", "SWEEP_CSV", "sweeps/sweep.csv", "lpath", "sweep CSV on this machine", pod=False),
    _k("sweep", "SWEEP_MATCH", "", "str", "only rows whose run_id contains this"),
    _k("sweep", "SWEEP_START_AT", "", "str", "skip rows before this run_id"),
    _k("sweep", "SWEEP_LIMIT", "", "optint", "run at most this many rows"),
    _k("sweep", "SWEEP_FORCE", "0", "bool", "1: rerun runs whose summary.json says ok"),
    _k("sweep", "SWEEP_FAIL_FAST", "0", "bool", "1: stop the queue at the first failed run"),
    _k("sweep", "SWEEP_TMUX_SESSION", "sweeps", "session", "tmux session of the sweep queue"),
    _k("sweep", "SWEEP_WANDB", "0", "bool", "1: wandb_log=True for every run"),
    _k("sweep", "WANDB_PROJECT", "", "str", "W&B project (passed as wandb_project= when set)"),
    _k("sweep", "WANDB_GROUP", "", "str", "W&B group (empty: sweep-<timestamp>)"),
    _k("sweep", "TRAIN_WORKDIR", "examples/nanogpt", "str", "training workdir, relative to OPS_REMOTE_REPO"),
    _k("sweep", "TRAIN_SCRIPT", "train.py", "str", "training script, relative to TRAIN_WORKDIR"),
    _k("sweep", "TRAIN_ARG_STYLE", "bare", "choice", "bare: key=value (seed); dashdash: --key=value",
       choices=("bare", "dashdash")),
    _k("sweep", "TRAIN_INJECT", "out_dir data_dir seed wandb", "words",
       "injected arguments, any of: out_dir data_dir seed wandb"),
    _k("sweep", "TRAIN_NPROC", "", "optint", "torchrun processes per run (empty: one per GPU the run holds)"),
    _k("sweep", "TRAIN_LAUNCHER", "torchrun", "choice",
       "torchrun: torchrun --nproc-per-node; python: one plain python process (no RANK/WORLD_SIZE)",
       choices=("torchrun", "python")),
    _k("sweep", "RUN_TEMPLATE", "", "lpath",
       "Jinja template of each run's launch script, command.sh (empty: run_command.sh.j2 beside this file if "
       "there is one, else wfops' own remote_templates/run_command.sh.j2); README: Launch script", pod=False),
    _k("sweep", "RUN_GPUS", "all", "gpus", "GPUs a run holds unless its CSV `gpus` cell says: all, or a number"),
    _k("sweep", "WF_FAKE_GPUS", "", "optint",
       "pretend the pod has this many GPU slots (CPU targets, tests, the demo): packing without GPUs"),
    _k("sweep", "RDZV_BASE_PORT", "29500", "int",
       "rendezvous ports: each running torchrun gets a free one of the 500 from here"),
    _k("sweep", "RDZV_HOST", "", "str",
       "multi-node runs (CSV `nodes`): the address the other pods reach the first pod at (empty: the address "
       "wfops reaches it at over SSH)", pod=False),
    _k("sweep", "RDZV_PORT", "29400", "int",
       "multi-node runs: the c10d rendezvous port on the first pod (the k-th multi-node run of a sweep: +k)",
       pod=False),
    _k("sweep", "RDZV_JOIN_SECS", "600", "int",
       "multi-node runs: how long a node waits for the others at the rendezvous before the run fails", pod=False),
    _k("sweep", "RUN_RETRIES", "0", "int", "retries of a run that failed with a class in RETRY_ON"),
    _k("sweep", "RETRY_ON", "lost nccl stalled", "words",
       "failure classes that are retried: lost nccl stalled oom nonzero_exit timeout sync_failed disk_full"),
    _k("sweep", "RETRY_BACKOFF_SECS", "30", "int", "wait before retry n: this times 2^(n-1), at most 10 minutes"),
    _k("sweep", "RUN_STALL_SECS", "0", "int",
       "end a run (class stalled) after this long with no log output and no change in its output dir (0: off)"),
    _k("sweep", "KEEP_PREVIOUS", "3", "int", "replaced runs kept per run id in _previous/ (newest first)"),
    _k("sweep", "SWEEP_COMMON_OVERRIDES", "", "str", "overrides added to every row (a row's own value wins)"),
    _k("sweep", "RUN_TIMEOUT_SECS", "43200", "int", "per-run wall-clock limit in seconds (0: no limit)"),
    _k("sweep", "RUN_OUT_MODE", "durable", "choice",
       "durable: train into the run dir; local_sync: train on local disk, rsync into the run dir",
       choices=("durable", "local_sync")),
    _k("sweep", "RUN_OUT_LOCAL_ROOT", "${OPS_REMOTE_REPO}/${TRAIN_WORKDIR}/out", "rpath",
       "local_sync: fast local disk for training output"),
    _k("sweep", "SYNC_INTERVAL_SECS", "60", "int", "local_sync: seconds between rsync passes"),
    _k("sweep", "METRIC_PATTERNS", r"iter (?P<step>\d+): loss (?P<loss>[\d.]+)", "patterns",
       "metrics from log lines when a run writes no metrics.jsonl: regexes with named groups (step + metrics), "
       "separated by ' ;; ' (empty: none)"),
    _k("sweep", "METRIC_COLUMNS", "", "words",
       "metrics shown by sweep.status and sweep.report (empty: the first metric found)"),
    # -- secrets the pod environment commonly needs (never printed)
    _k("secrets", "WANDB_API_KEY", "", "str", "W&B API key, written only into the pod env file (mode 600)"),
    _k("secrets", "HF_TOKEN", "", "str", "Hugging Face token, written only into the pod env file (mode 600)"),
    # -- misc
    _k("misc", "EXTRA_ENV_KEYS", "", "words",
       "names of extra variables in this file meant for the pod environment (no unknown-key warning)",
       pod=False),
)

KEYS_BY_NAME: dict[str, Key] = {k.name: k for k in KEYS}
# path keys where an empty value means "none" (BOOTSTRAP_SCRIPT= : no bootstrap script)
OPTIONAL_PATHS = frozenset({"BOOTSTRAP_SCRIPT", "WANDB_SETUP_SCRIPT", "HF_HOME"})
_TRAIN_INJECT_WORDS = ("out_dir", "data_dir", "seed", "wandb")


def is_secret(name: str) -> bool:
    return bool(_SECRET_RE.search(name))


MASK = "********"
_MIN_SECRET = 4  # shorter secret values are not masked inside other text (they would mask half the output)


def redact(name: str, value: str) -> str:
    if is_secret(name) and value:
        return MASK
    return value


def mask_secrets(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret value in it replaced by the mask, whichever key carried it."""
    for secret in sorted({s for s in secrets if len(s) >= _MIN_SECRET}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


# ---------------------------------------------------------------- file discovery

def find_config(explicit: str | None, cwd: Path, environ: Mapping[str, str],
                consumer_default: str | None = None) -> Path:
    """--config > $WORKFLOW_CONFIG > the consumer's invoke config > ./workflow.env > infra_scripts/workflow.env."""
    for origin, candidate in (("--config", explicit), (CONFIG_ENV_VAR, environ.get(CONFIG_ENV_VAR)),
                              ("wfops.settings.load", consumer_default)):
        if candidate:
            path = (cwd / os.path.expanduser(candidate)).resolve()
            if not path.is_file():
                raise ConfigError(f"config file not found: {candidate} (from {origin})")
            return path
    for rel in DEFAULT_LOCATIONS:
        if (cwd / rel).is_file():
            return (cwd / rel).resolve()
    raise ConfigError(
        "no config file: create ./workflow.env (start from workflow.env.example) "
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
    for binding in parse_stream(io.StringIO(text)):
        line = binding.original.line
        if binding.error:
            raise ConfigError(f"{source} line {line}: cannot parse {binding.original.string.strip()!r}")
        if binding.key is None:
            continue
        if not _KEY_NAME_RE.match(binding.key):
            raise ConfigError(f"{source} line {line}: invalid key name {binding.key!r}")
        raw_rhs = binding.original.string.split("=", 1)[1].lstrip() if "=" in binding.original.string else ""
        entries[binding.key] = _Entry(binding.value or "", raw_rhs.startswith("'"), line)
    return entries


class _Resolver:
    def __init__(self, entries: Mapping[str, _Entry], environ: Mapping[str, str], source: str) -> None:
        self.entries = entries
        self.environ = environ
        self.source = source
        self.done: dict[str, str] = {}
        self.active: list[str] = []

    def value(self, name: str) -> str | None:
        if name in self.done:
            return self.done[name]
        entry = self.entries.get(name)
        if entry is not None:
            raw, literal, where = entry.value, entry.literal, f"{self.source} line {entry.line}"
        elif name in KEYS_BY_NAME:
            raw, literal, where = KEYS_BY_NAME[name].default, False, f"default of {name}"
        elif name in self.environ:
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
            if got is None or (got == "" and fallback is not None):
                if fallback is not None:
                    return fallback
                raise ConfigError(
                    f"config: {name} ({where}) refers to ${{{ref}}}, which is not set in the file, "
                    f"the defaults or the environment (write ${{{ref}:-}} if empty is fine)"
                )
            return got

        return _REF_RE.sub(sub, raw)


# ---------------------------------------------------------------- typed validation

def is_gpus_request(text: str) -> bool:
    """A run's GPU request (RUN_GPUS, a CSV `gpus` cell): `all` or a whole number from 1 to 9999."""
    return text == ALL_GPUS or bool(re.fullmatch(r"[1-9]\d{0,3}", text))


_HOST_RE = re.compile(r"^(?:[A-Za-z0-9._-]+@)?(?:[A-Za-z0-9_][A-Za-z0-9._-]*|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$")
_SESSION_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_SHA_RE = re.compile(r"^[0-9a-fA-F]{7,40}$")


def _check(key: Key, value: str) -> tuple[object, str | None]:
    """Return (typed value, None) or (None, 'expected ...')."""
    kind = key.kind
    if "\x00" in value:
        return None, "no NUL characters"
    if kind == "bool":
        low = value.strip().lower()
        if low in TRUE_WORDS:
            return True, None
        if low in FALSE_WORDS:
            return False, None
        return None, "a boolean: 1/true/yes/on or 0/false/no/off"
    if kind in ("int", "optint"):
        v = value.strip()
        if v == "" and kind == "optint":
            return None, None
        if re.fullmatch(r"\d{1,12}", v):
            if key.name in ("RDZV_BASE_PORT", "RDZV_PORT") and not 1024 <= int(v) <= 65000:
                return None, "a port from 1024 to 65000 (each running torchrun takes the next free one)"
            return int(v), None
        return None, "a whole number >= 0" + (" (or empty)" if kind == "optint" else "")
    if kind == "gpus":
        v = value.strip()
        if is_gpus_request(v):
            return v, None
        return None, "all, or a whole number >= 1"
    if kind == "choice":
        if value in key.choices:
            return value, None
        return None, "one of " + ", ".join(key.choices)
    if kind == "rpath":
        if value == "" and (key.default == "" or key.name in OPTIONAL_PATHS):
            return "", None
        if "\n" in value or not (value.startswith("/") or value == "~" or value.startswith("~/")):
            return None, "an absolute path on the pod (or ~/...)"
        return value, None
    if kind == "lpath":
        if "\n" in value:
            return None, "a path on this machine"
        return value, None
    if kind == "host":
        if value == "" or value == "local" or _HOST_RE.match(value):
            return value, None
        return None, "`local`, an ssh_config alias, or user@host[:port]"
    if kind == "targets":
        return _check_targets(key, value)
    if kind == "words":
        words = value.split()
        if key.name == "TRAIN_INJECT":
            bad = [w for w in words if w not in _TRAIN_INJECT_WORDS]
            if bad:
                return None, "space-separated words among: " + " ".join(_TRAIN_INJECT_WORDS)
        if key.name == "RETRY_ON" and any(w not in FAILURE_CLASSES for w in words):
            return None, "space-separated failure classes among: " + " ".join(FAILURE_CLASSES)
        if key.name == "PREREQ_COMMANDS" and any(not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", w) for w in words):
            return None, "space-separated command names"
        if key.name == "APT_PACKAGES" and any(not re.fullmatch(r"[a-z0-9][a-z0-9.+:=~-]*", w) for w in words):
            return None, "space-separated Debian package names"
        if key.name == "DATA_CHECK" and any(w.startswith("/") or ".." in w.split("/") for w in words):
            return None, "glob patterns relative to DATA_DIR (no leading '/', no '..')"
        return tuple(words), None
    if kind == "patterns":
        return _check_patterns(value)
    if kind == "session":
        if value == "" and key.default == "":
            return "", None
        if _SESSION_RE.match(value):
            return value, None
        return None, "letters, digits, '_' or '-' (a tmux name)"
    if kind == "sha":
        if value == "" or _SHA_RE.match(value):
            return value.lower(), None
        return None, "7 to 40 hex digits of a git commit"
    if kind == "pr":
        if value == "" or re.fullmatch(r"[1-9]\d{0,8}", value):
            return value, None
        return None, "a pull request number"
    if "\n" in value and key.kind == "str" and key.name not in ("REPO_INSTALL_CMD", "FINEWEB_DOWNLOAD_CMD"):
        return None, "a single line"
    return value, None


def _check_targets(key: Key, value: str) -> tuple[object, str | None]:
    """LIUM_TARGETS / OPS_HOSTS: comma-separated entries, each valid as its singular key, none twice."""
    entries = tuple(e.strip() for e in value.split(",") if e.strip())
    if key.name == "OPS_HOSTS":
        bad = [e for e in entries if not (e == "local" or _HOST_RE.match(e))]
        if bad:
            return None, f"comma-separated hosts, each `local`, an ssh_config alias or user@host[:port] ({bad[0]!r})"
    elif any(c.isspace() or c in "'\"$`;" for e in entries for c in e):
        return None, "comma-separated Lium pod names, UUIDs or huids"
    twice = sorted({e for e in entries if entries.count(e) > 1})
    if twice:
        return None, f"each pod once ({twice[0]} is listed twice)"
    return entries, None


PATTERN_SEPARATOR = ";;"


def _check_patterns(value: str) -> tuple[object, str | None]:
    """METRIC_PATTERNS: regexes separated by ';;', each with a named group other than `step` (a metric)."""
    patterns = tuple(p.strip() for p in value.split(PATTERN_SEPARATOR) if p.strip())
    for pattern in patterns:
        try:
            groups = re.compile(pattern).groupindex
        except re.error as exc:
            return None, f"regular expressions separated by ' ;; ' ({pattern!r}: {exc})"
        if not set(groups) - {"step"}:
            return None, f"regexes with a named group per metric, e.g. (?P<loss>[\\d.]+) ({pattern!r} has none)"
    return patterns, None


# ---------------------------------------------------------------- settings

@dataclass(frozen=True)
class Settings:
    path: Path | None
    values: Mapping[str, str]  # resolved strings: every known key, then extra keys of the file
    typed: Mapping[str, object]
    sources: Mapping[str, str]  # "<file> line N" | "default"
    warnings: tuple[str, ...] = field(default=())

    def __getitem__(self, name: str):  # typed value of a known key
        return self.typed[name]

    def get(self, name: str, default: object = None) -> object:
        return self.typed.get(name, default)


    def secret_values(self) -> list[str]:
        """Values never to be shown (for redacting remote output too); longest first."""
        vals = {v for k, v in self.values.items() if is_secret(k) and len(v) >= _MIN_SECRET}
        return sorted(vals, key=len, reverse=True)

    def pod_env_text(self) -> str:
        """The file written at REMOTE_ENV_PATH: `KEY='value'` lines that bash can source exactly."""
        lines = ["# written by wfops from " + (self.path.name if self.path else "defaults")
                 + "; edit that file, not this one"]
        for name, value in self.values.items():
            key = KEYS_BY_NAME.get(name)
            if (key is not None and not key.pod) or (key is None and name.startswith("LIUM_")):
                continue
            quote = qpath if key is not None and key.kind == "rpath" else shlex.quote
            lines.append(f"{name}={quote(value)}")
        return "\n".join(lines) + "\n"

    def pod_env_sha256(self) -> str:
        return hashlib.sha256(self.pod_env_text().encode()).hexdigest()

    def redacted_values(self) -> dict[str, str]:
        """Every value as it may be shown: secret keys masked, and any secret value inside another value
        (REPO_URL=https://u:${HF_TOKEN}@host/...) masked too."""
        secrets = self.secret_values()
        return {k: mask_secrets(redact(k, v), secrets) for k, v in self.values.items()}

    def mask(self, text: str) -> str:
        return mask_secrets(text, self.secret_values())

    @property
    def state_file(self) -> str:
        outputs = self.values["OPS_REMOTE_OUTPUTS_DIR"]
        return self.values["WF_STATE_FILE"] or f"{outputs}/{CONTROL_DIR}/{STATE_FILE}"



def parse_settings(text: str, source: str = "workflow.env", environ: Mapping[str, str] | None = None,
                   path: Path | None = None) -> Settings:
    environ = os.environ if environ is None else environ
    entries = _parse(text, source)
    resolver = _Resolver(entries, environ, source)
    values: dict[str, str] = {}
    typed: dict[str, object] = {}
    sources: dict[str, str] = {}
    errors: list[str] = []
    secrets = [resolver.value(name) or "" for name in [*KEYS_BY_NAME, *entries] if is_secret(name)]
    for key in KEYS:
        value = resolver.value(key.name) or ""
        values[key.name] = value
        sources[key.name] = f"{source} line {entries[key.name].line}" if key.name in entries else "default"
        result, expected = _check(key, value)
        if expected is not None:
            where = f" ({sources[key.name]})" if key.name in entries else ""
            shown = mask_secrets(redact(key.name, value), secrets)
            errors.append(f"config: {key.name}={shown!r} is not valid{where}: expected {expected}")
        typed[key.name] = result
    if errors:
        raise ConfigError(errors[0] + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""))
    extras_allowed = set(typed["EXTRA_ENV_KEYS"])  # type: ignore[arg-type]
    warnings: list[str] = []
    for name, entry in entries.items():
        if name in KEYS_BY_NAME:
            continue
        values[name] = resolver.value(name) or ""
        sources[name] = f"{source} line {entry.line}"
        if name in extras_allowed:
            continue
        close = difflib.get_close_matches(name, KEYS_BY_NAME, n=1, cutoff=0.75)
        hint = f" (did you mean {close[0]}?)" if close else ""
        fate = ("it stays on this machine (LIUM_* keys never reach the pod)" if name.startswith("LIUM_")
                else "it is passed to the pod environment as is (list intended extras in EXTRA_ENV_KEYS)")
        warnings.append(f"config: unknown key {name} at {source} line {entry.line}{hint}; {fate}")
    _check_sizes(values, sources)
    return Settings(path, values, typed, sources, tuple(warnings))


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
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None
    return parse_settings(text, source=path.name, environ=environ, path=path)


_GROUP_TITLES = {
    "target": "Which machine: LIUM_TARGET wins, else OPS_DEFAULT_HOST (`local` = this machine); a fleet: "
              "LIUM_TARGETS and/or OPS_HOSTS",
    "lium": "Renting with pod.up (Lium)",
    "layout": "Where things live on the pod (absolute paths, or ~/...)",
    "workflow": "Workflow state machine and tracked tasks",
    "bootstrap": "bootstrap",
    "checkout": "checkout",
    "sweep": "Sweeps",
    "secrets": "Secrets: written only into the pod env file (mode 600), never printed",
    "misc": "Other",
}


def example_text() -> str:
    """workflow.env.example: every key, its default, one line of meaning (tests keep the file in step)."""
    out = [
        "# wfops configuration: copy to workflow.env and edit. Every key is optional except a target",
        "# (LIUM_TARGET or OPS_DEFAULT_HOST) and, for checkout, REPO_URL. Values may use ${OTHER_KEY},",
        "# ${ENV_VAR} or ${VAR:-fallback}; 'single-quoted' values are literal. Booleans: 1/true/yes/on or",
        "# 0/false/no/off. Keys ending in _KEY, _TOKEN, _SECRET or containing PASSWORD are never printed.",
    ]
    group = None
    for key in KEYS:
        if key.group != group:
            group = key.group
            out += ["", f"# ---- {_GROUP_TITLES[group]}"]
        out.append(f"# {key.help}")
        value = key.default
        if "${" in value:  # double quotes: the reference expands, as in the default
            value = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        elif value and any(c in value for c in " \"'#$"):
            value = "'" + value.replace("'", "\\'") + "'"
        out.append(f"{key.name}={value}")
    return "\n".join(out) + "\n"


if __name__ == "__main__":  # python -m wfops.settings.load > workflow.env.example
    print(example_text(), end="")

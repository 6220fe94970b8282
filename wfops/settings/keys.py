"""The one table of configuration keys: name, default, check, one line of meaning, group, whether it reaches the pod.

Each key carries its own validation: `check` turns the resolved text into the key's typed value or raises
`checks.Invalid`; the check's return type is the type of the key's `Settings` attribute (lower-case name).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from wfops.agent.presets import DEFAULT_PRESETS
from wfops.agent.presets import NAMES as PRESET_NAMES
from wfops.agent.states import FAILURE_CLASSES
from wfops.settings import checks as c


@dataclass(frozen=True)
class Key:
    name: str
    default: str
    check: Callable[[str], object]
    help: str
    group: str
    pod: bool = True  # written to REMOTE_ENV_PATH on the pod

    @property
    def attr(self) -> str:
        """The `Settings` attribute of this key."""
        return self.name.lower()

    @property
    def pod_path(self) -> bool:
        """A path on the pod: the pod env file leaves a leading ~/ for the pod's shell to expand."""
        return self.check in (c.pod_path, c.optional_pod_path)

    def typed(self, value: str) -> object:
        """The key's typed value of the resolved text `value`; `checks.Invalid` when the key refuses it."""
        if "\x00" in value:
            raise c.Invalid("no NUL characters")
        return self.check(value)


def _k(group: str, name: str, default: str, check: Callable[[str], object], help: str, pod: bool = True) -> Key:
    return Key(name, default, check, help, group, pod)


TRAIN_INJECT_WORDS = ("out_dir", "data_dir", "seed", "wandb")
_train_inject = c.words_among(TRAIN_INJECT_WORDS, "space-separated words among:")
_retry_on = c.words_among(FAILURE_CLASSES, "space-separated failure classes among:")
_prereq_commands = c.words_matching(lambda w: bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", w)),
                                    "space-separated command names")
_apt_packages = c.words_matching(lambda w: bool(re.fullmatch(r"[a-z0-9][a-z0-9.+:=~-]*", w)),
                                 "space-separated Debian package names")
_data_check = c.words_matching(lambda w: not (w.startswith("/") or ".." in w.split("/")),
                               "glob patterns relative to DATA_DIR (no leading '/', no '..')")


def _volumes(value: str) -> tuple[str, ...]:
    """LIUM_VOLUMES: comma-separated `id:<HUID>` entries in LIUM_TARGETS' order; an empty entry: that pod has none."""
    if not value.strip():
        return ()
    entries = tuple(e.strip() for e in value.split(","))
    if any(e and not re.fullmatch(r"id:[A-Za-z0-9][A-Za-z0-9._-]*", e) for e in entries):
        raise c.Invalid("comma-separated id:<VOLUME_HUID> entries, one per LIUM_TARGETS pod, in its order")
    return entries


MAX_DOLLARS = 1e9  # a price per hour or a budget above this is a typo; far above it the cost arithmetic overflows


def _dollars(value: str) -> float | None:
    """A price or a budget in USD: empty (unknown / none), or a number from 0 to MAX_DOLLARS."""
    text = value.strip()
    if not text:
        return None
    try:
        number = float(text)
    except ValueError:
        number = -1.0
    if not 0 <= number <= MAX_DOLLARS:  # NaN fails both
        raise c.Invalid("empty, or a number of US dollars from 0 to 1e9 (e.g. 2.50)")
    return number


def _resume_when(value: str) -> str:
    """RESUME_WHEN: one glob inside the run's output dir (the pod checks it again: wfops.agent.resume)."""
    text = c.line(value).strip()
    if text.startswith("/") or ".." in text.replace("\\", "/").split("/"):
        raise c.Invalid("a glob relative to the run's output dir, e.g. ckpt.pt (no leading '/', no '..')")
    return text


def _metric_presets(value: str) -> tuple[str, ...]:
    """METRIC_PRESETS: preset names separated by commas or spaces; `default` is the common ones, `none` none."""
    out: list[str] = []
    for name in (w for w in re.split(r"[\s,]+", value) if w):
        if name not in (*PRESET_NAMES, "default", "none"):
            raise c.Invalid(f"preset names among {', '.join(PRESET_NAMES)}, default or none ({name!r} is none)")
        for one in DEFAULT_PRESETS if name == "default" else () if name == "none" else (name,):
            if one not in out:
                out.append(one)
    return tuple(out)


KEYS: tuple[Key, ...] = (
    # -- target
    _k("target", "LIUM_TARGET", "", c.line,
       "Lium pod: name, UUID, huid or row number of `lium ps`; wins over OPS_DEFAULT_HOST (used instead when lium "
       "is missing or its API is down)", pod=False),
    _k("target", "LIUM_API_KEY", "", c.line,
       "Lium API key for every lium call, in lium's environment only (never argv, never the pod); empty: lium's "
       "own (LIUM_API_KEY in the environment, ~/.lium/config.ini)", pod=False),
    _k("target", "LIUM_LOOKUP_TIMEOUT_SECS", "20", c.whole,
       "seconds a `lium ps` lookup of LIUM_TARGET may take before the Lium API counts as down (then "
       "OPS_DEFAULT_HOST, and no lookup for 30 s)", pod=False),
    _k("target", "OPS_DEFAULT_HOST", "", c.host,
       "SSH fallback: an ~/.ssh/config alias, user@host[:port], or `local` for this machine", pod=False),
    _k("target", "LIUM_TARGETS", "", c.lium_names,
       "a fleet of Lium pods, comma-separated, each named as LIUM_TARGET is; commands run on all of them "
       "(WF_POD=NAME picks one); never beside LIUM_TARGET / OPS_DEFAULT_HOST", pod=False),
    _k("target", "OPS_HOSTS", "", c.hosts,
       "a fleet of SSH hosts, comma-separated, each as OPS_DEFAULT_HOST is (with LIUM_TARGETS: both join the "
       "fleet); never beside LIUM_TARGET / OPS_DEFAULT_HOST", pod=False),
    _k("target", "SSH_KEY_PATH", "", c.local_path,
       "private key for OPS_DEFAULT_HOST (empty: ssh_config IdentityFile, then ~/.ssh defaults)", pod=False),
    _k("target", "SSH_STRICT_HOST_KEYS", "0", c.boolean,
       "1: refuse hosts missing from ~/.ssh/known_hosts; 0: pin a new host's first key in "
       "~/.local/state/wfops/known_hosts (a changed key is always refused)",
       pod=False),
    _k("target", "SSH_CONNECT_TIMEOUT", "15", c.seconds_at_least_one, "seconds to wait for the SSH connection (>= 1)",
       pod=False),
    _k("target", "WF_PERSIST_SECS", "300", c.whole,
       "seconds the SSH connection stays open after a command (a background keeper, like ControlPersist); "
       "0: none", pod=False),
    # -- lium
    _k("lium", "LIUM_POD_NAME", "", c.line, "pod.up: name of the pod to rent", pod=False),
    _k("lium", "LIUM_EXECUTOR_ID", "", c.line,
       "pod.up: node UUID or huid (`lium ls --format json`); a bare row number is refused", pod=False),
    _k("lium", "LIUM_GPU", "", c.line, "pod.up: GPU type filter, e.g. H100", pod=False),
    _k("lium", "LIUM_COUNT", "", c.optional_whole, "pod.up: number of GPUs", pod=False),
    _k("lium", "LIUM_COUNTRY", "", c.line, "pod.up: country code filter", pod=False),
    _k("lium", "LIUM_PORTS", "", c.optional_whole, "pod.up: number of extra ports", pod=False),
    _k("lium", "LIUM_TTL", "6h", c.line, "pod.up: auto-remove after this long (90m, 6h, 2d; always passed)",
       pod=False),
    _k("lium", "LIUM_VOLUME", "", c.line, "pod.up: volume to attach at /mnt: id:<HUID> or new:name=<NAME>",
       pod=False),
    _k("lium", "LIUM_VOLUMES", "", _volumes,
       "a fleet's own volumes: id:<HUID> per LIUM_TARGETS pod, in its order; a lost pod's replacement gets its pod's "
       "(sweep.wait --recover; LIUM_VOLUME is never attached to a fleet's replacement)", pod=False),
    _k("lium", "LIUM_YES", "0", c.boolean,
       "pod.up/pod.down: do not ask for confirmation (needed without a terminal, like --yes)", pod=False),
    # -- pod layout
    _k("layout", "REMOTE_ENV_PATH", "/mnt/project.env", c.pod_path,
       "where this config is written on the pod (mode 600); every remote step reads it"),
    _k("layout", "OPS_REMOTE_REPO", "~/repo", c.pod_path, "git checkout of REPO_URL on the pod"),
    _k("layout", "OPS_REMOTE_OUTPUTS_DIR", "/mnt/pod_artifacts/outputs", c.pod_path,
       "durable outputs on the pod: runs, tasks, manifests, workflow state"),
    _k("layout", "DATA_DIR", "/mnt/data/fineweb10B", c.pod_path, "FineWeb shards on the pod"),
    _k("layout", "HF_HOME", "/mnt/hf", c.optional_pod_path, "Hugging Face cache on the pod"),
    _k("layout", "LOCAL_ARTIFACTS_DIR", "artifacts/pod_logs", c.local_path,
       "run.fetch puts runs here, on this machine", pod=False),
    # -- state machine and tracked tasks
    _k("workflow", "WF_FSM_ENFORCE", "1", c.boolean, "1: refuse commands out of order; 0: record only"),
    _k("workflow", "WF_STATE_FILE", "", c.optional_pod_path,
       "state file (empty: $OPS_REMOTE_OUTPUTS_DIR/_control/workflow_state.json)"),
    _k("workflow", "WF_TMUX_SESSION", "wf", c.session, "tmux session of tracked tasks"),
    _k("workflow", "WF_TMUX_SOCKET", "", c.optional_session,
       "tmux socket name (tmux -L) for wfops sessions; empty: tmux's default server"),
    _k("workflow", "TASK_TIMEOUT_SECS", "7200", c.whole,
       "default timeout of task.run in seconds (0: no limit)"),
    _k("workflow", "KILL_GRACE_SECS", "20", c.whole, "seconds between TERM and KILL when a timeout hits"),
    # -- bootstrap
    _k("bootstrap", "PREREQ_COMMANDS", "git tmux rsync curl python3", _prereq_commands,
       "bootstrap: commands the pod must have; each missing one is reported"),
    _k("bootstrap", "AUTO_INSTALL_PREREQS", "0", c.boolean, "bootstrap: apt-get install APT_PACKAGES if missing"),
    _k("bootstrap", "APT_PACKAGES", "git tmux rsync curl python3 python3-venv", _apt_packages,
       "bootstrap: packages installed when AUTO_INSTALL_PREREQS=1"),
    _k("bootstrap", "BOOTSTRAP_SCRIPT", "/mnt/bootstrap-pod.sh", c.optional_pod_path,
       "bootstrap: run this pod script if it exists (a failure only warns)"),
    _k("bootstrap", "WANDB_SETUP_SCRIPT", "/mnt/set-wandb-api-key.sh", c.optional_pod_path,
       "bootstrap: W&B setup script, run only when SWEEP_WANDB=1 or RUN_WANDB_SETUP=1"),
    _k("bootstrap", "RUN_WANDB_SETUP", "0", c.boolean, "bootstrap: run WANDB_SETUP_SCRIPT even without SWEEP_WANDB"),
    # -- checkout
    _k("checkout", "REPO_URL", "", c.line, "git URL of the training repo (required by checkout)"),
    _k("checkout", "CHECKOUT_BRANCH", "main", c.line, "branch to check out (ignored when CHECKOUT_PR is set)"),
    _k("checkout", "CHECKOUT_PR", "", c.pr, "GitHub pull request number to check out (pull/N/head)"),
    _k("checkout", "EXPECT_GIT_SHA", "", c.sha, "fail unless HEAD starts with this SHA"),
    _k("checkout", "CHECKOUT_FORCE_CLEAN", "0", c.boolean, "1: discard tracked modifications in the checkout"),
    _k("checkout", "REMOTE_PYTHON_BIN", "python3", c.line,
       "python with the image's torch; the venv is made from it with --system-site-packages"),
    _k("checkout", "VENV_RECREATE", "0", c.boolean, "1: rebuild $OPS_REMOTE_REPO/.venv"),
    _k("checkout", "CPU_ONLY", "0", c.boolean,
       "1: this target has no GPU on purpose: skip the CUDA check, run torchrun on CPU (gloo)"),
    _k("checkout", "REPO_INSTALL_CMD", 'pip install -e "$OPS_REMOTE_REPO[examples]"', c.text,
       "checkout: installs the repo's dependencies inside the venv (empty: skip)"),
    _k("checkout", "DOWNLOAD_FINEWEB", "0", c.boolean, "checkout: download a minimal shard pair if missing"),
    _k("checkout", "FINEWEB_DOWNLOAD_CMD", "python data/cached_fineweb10B.py 1", c.text,
       "checkout: the repo's downloader, run in TRAIN_WORKDIR with WF_DOWNLOAD_DIR set"),
    _k("checkout", "WF_MOUNT_TABLE", "/proc/self/mounts", c.pod_path,
       "checkout: mount table used to tell whether DATA_DIR is on s3fs (tests point it elsewhere)"),
    _k("checkout", "DATA_LINK_DIR", "data/fineweb10B", c.line,
       "checkout: where the data appears, relative to TRAIN_WORKDIR (see DATA_LINK)"),
    _k("checkout", "DATA_CHECK", "fineweb_train_*.bin fineweb_val_*.bin", _data_check,
       "checkout: glob patterns that must each match a file in DATA_DIR (empty: no data check)"),
    _k("checkout", "DATA_PREPARE_CMD", "", c.text,
       "checkout: the repo's own data preparation, run by bash in OPS_REMOTE_REPO with the venv first on PATH and "
       "WF_DATA_DIR=DATA_DIR, after the install and before the data check; skipped while DATA_CHECK passes "
       "(empty: none)"),
    _k("checkout", "DATA_LINK", "shards", c.choice("shards", "dir", "none"),
       "checkout: shards: link each file DATA_CHECK matches into DATA_LINK_DIR; dir: DATA_LINK_DIR becomes a link "
       "to DATA_DIR; none: link nothing"),
    # -- sweeps
    _k("sweep", "SWEEP_CSV", "sweeps/sweep.csv", c.local_path, "sweep CSV on this machine", pod=False),
    _k("sweep", "SWEEP_MATCH", "", c.line, "only rows whose run_id contains this"),
    _k("sweep", "SWEEP_START_AT", "", c.line, "skip rows before this run_id"),
    _k("sweep", "SWEEP_LIMIT", "", c.optional_whole, "run at most this many rows"),
    _k("sweep", "SWEEP_FORCE", "0", c.boolean, "1: rerun runs whose summary.json says ok"),
    _k("sweep", "SWEEP_FAIL_FAST", "0", c.boolean, "1: stop the queue at the first failed run"),
    _k("sweep", "SWEEP_TMUX_SESSION", "sweeps", c.session, "tmux session of the sweep queue"),
    _k("sweep", "SWEEP_WANDB", "0", c.boolean, "1: wandb_log=True for every run"),
    _k("sweep", "WANDB_PROJECT", "", c.line, "W&B project (passed as wandb_project= when set)"),
    _k("sweep", "WANDB_GROUP", "", c.line, "W&B group (empty: sweep-<timestamp>)"),
    _k("sweep", "TRAIN_WORKDIR", "examples/nanogpt", c.inside_repo,
       "training workdir, relative to OPS_REMOTE_REPO and inside it (no leading '/', no '..')"),
    _k("sweep", "TRAIN_SCRIPT", "train.py", c.command_prefix,
       "training command after python, relative to TRAIN_WORKDIR (or absolute): a script with fixed arguments "
       "(main.py --quiet) "
       "or -m pkg.train; split into argv words like a shell line, never run by a shell"),
    _k("sweep", "TRAIN_ARG_STYLE", "bare", c.choice("bare", "dashdash", "argparse"),
       "bare: key=value; dashdash: --key=value; argparse: --key=value, and overrides may be flags (--tied) and "
       "--key value pairs, passed as written (docs/your-repo.md)"),
    _k("sweep", "TRAIN_INJECT", "out_dir data_dir seed wandb", _train_inject,
       "injected arguments, any of: out_dir data_dir seed wandb"),
    _k("sweep", "TRAIN_NPROC", "", c.optional_whole, "torchrun processes per run (empty: one per GPU the run holds)"),
    _k("sweep", "TRAIN_LAUNCHER", "auto", c.choice("auto", "torchrun", "python"),
       "auto: one plain python process for a one-process run on a CPU target (CPU_ONLY=1), else torchrun; "
       "torchrun: always torchrun --nproc-per-node; python: one plain python process (no RANK/WORLD_SIZE)"),
    _k("sweep", "RUN_TEMPLATE", "", c.local_path,
       "Jinja template of each run's launch script, command.sh (empty: run_command.sh.j2 beside this file if "
       "there is one, else wfops' own remote_templates/run_command.sh.j2); docs/sweeps.md: Launch script", pod=False),
    _k("sweep", "RUN_GPUS", "all", c.gpus, "GPUs a run holds unless its CSV `gpus` cell says: all, or a number"),
    _k("sweep", "WF_FAKE_GPUS", "", c.optional_whole,
       "pretend the pod has this many GPU slots (CPU targets, tests, the demo): packing without GPUs"),
    _k("sweep", "RDZV_BASE_PORT", "29500", c.port,
       "rendezvous ports: each running torchrun gets a free one of the 500 from here"),
    _k("sweep", "RDZV_HOST", "", c.line,
       "multi-node runs (CSV `nodes`): the address the other pods reach the first pod at (empty: the address "
       "wfops reaches it at over SSH)", pod=False),
    _k("sweep", "RDZV_PORT", "29400", c.port,
       "multi-node runs: the c10d rendezvous port on the first pod (the k-th multi-node run of a sweep: +k)",
       pod=False),
    _k("sweep", "RDZV_JOIN_SECS", "600", c.whole,
       "multi-node runs: how long a node waits for the others at the rendezvous before the run fails", pod=False),
    _k("sweep", "RUN_RETRIES", "0", c.whole, "retries of a run that failed with a class in RETRY_ON"),
    _k("sweep", "RETRY_ON", "lost nccl stalled", _retry_on,
       "failure classes that are retried: lost nccl stalled oom nonzero_exit timeout sync_failed disk_full"),
    _k("sweep", "RETRY_BACKOFF_SECS", "30", c.whole, "wait before retry n: this times 2^(n-1), at most 10 minutes"),
    _k("sweep", "RUN_STALL_SECS", "0", c.whole,
       "end a run (class stalled) after this long with no log output and no change in its output dir (0: off)"),
    _k("sweep", "RESUME_ARGS", "", c.line,
       "key=value words added to a run's command on a later attempt when RESUME_WHEN matches (e.g. init_from=resume)",
       pod=False),
    _k("sweep", "RESUME_WHEN", "", _resume_when,
       "a glob relative to the run's output dir (e.g. ckpt.pt): a later attempt that finds it resumes (empty: never)",
       pod=False),
    _k("sweep", "POD_PRICE_PER_HOUR", "", _dollars,
       "USD per hour of an SSH host or `local` (a Lium pod's comes from `lium ps`); empty: unknown (no cost shown)",
       pod=False),
    _k("sweep", "SWEEP_BUDGET_USD", "", _dollars,
       "once a sweep has spent this much pod time, no run or attempt starts and it ends stopped (empty: no budget)",
       pod=False),
    _k("sweep", "RECOVER_AFTER_SECS", "300", c.whole,
       "sweep.wait --recover: a pod silent this long is lost and replaced (Lium) or waited for (SSH host)",
       pod=False),
    _k("sweep", "RECOVER_MAX", "3", c.whole,
       "sweep.wait --recover: at most this many pod recoveries per sweep, then it stops and says why", pod=False),
    _k("sweep", "KEEP_PREVIOUS", "3", c.whole, "replaced runs kept per run id in _previous/ (newest first)"),
    _k("sweep", "SWEEP_COMMON_OVERRIDES", "", c.line, "overrides added to every row (a row's own value wins)"),
    _k("sweep", "RUN_TIMEOUT_SECS", "43200", c.whole, "per-run wall-clock limit in seconds (0: no limit)"),
    _k("sweep", "RUN_OUT_MODE", "durable", c.choice("durable", "local_sync"),
       "durable: train into the run dir; local_sync: train on local disk, rsync into the run dir"),
    _k("sweep", "RUN_OUT_LOCAL_ROOT", "${OPS_REMOTE_REPO}/${TRAIN_WORKDIR}/out", c.pod_path,
       "local_sync: fast local disk for training output"),
    _k("sweep", "SYNC_INTERVAL_SECS", "60", c.whole, "local_sync: seconds between rsync passes"),
    _k("sweep", "METRIC_PATTERNS", "", c.patterns,
       "metrics from log lines when a run writes no metrics.jsonl: regexes with named groups (step + metrics), "
       "separated by ' ;; ', tried before METRIC_PRESETS on each line (empty: none of your own)"),
    _k("sweep", "METRIC_PRESETS", "default", _metric_presets,
       "named log-line shapes tried after METRIC_PATTERNS: nanogpt, pytorch-examples, json, kv (comma- or "
       "space-separated); default: all four; none: no presets"),
    _k("sweep", "METRIC_COLUMNS", "", c.words,
       "metrics shown by sweep.status and sweep.report (empty: the first metric found)"),
    # -- secrets the pod environment commonly needs (never printed)
    _k("secrets", "WANDB_API_KEY", "", c.line, "W&B API key, written only into the pod env file (mode 600)"),
    _k("secrets", "HF_TOKEN", "", c.line, "Hugging Face token, written only into the pod env file (mode 600)"),
    # -- misc
    _k("misc", "EXTRA_ENV_KEYS", "", c.words,
       "names of extra variables in this file meant for the pod environment (no unknown-key warning)",
       pod=False),
)

KEYS_BY_NAME: dict[str, Key] = {k.name: k for k in KEYS}

"""`Settings`: the validated configuration, one typed attribute per key of the KEYS table (keys.py).

The attributes are declared here, one per key, lower-case (`settings.rdzv_port: int`); their types are the
return types of the keys' checks, and a unit test holds the two in step. The resolved text of a key (for the
pod env file, `config.show`, redaction) is `raw(name)`; the extra keys of the file are `extras`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wfops.agent.presets import MARK as PRESET_MARK
from wfops.agent.states import CONTROL_DIR, STATE_FILE
from wfops.errors import ConfigError
from wfops.settings.checks import Invalid
from wfops.settings.keys import KEYS_BY_NAME
from wfops.settings.secrets import is_secret, mask_secrets, redact, shown_forms
from wfops.transport.shell import qpath

META_FIELDS = ("path", "sources", "warnings", "_raw", "_env_secrets")  # the fields of Settings that are no key


def invalid_line(name: str, value: str, exc: Invalid, secrets: list[str], where: str = "") -> str:
    """The one line of a key whose text its check refused: the value shown with every secret masked."""
    shown = mask_secrets(redact(name, value), secrets)
    return f"config: {name}={shown!r} is not valid{where}: expected {exc.expected}"


@dataclass(frozen=True, repr=False)
class Settings:
    path: Path | None
    sources: Mapping[str, str]  # every key and extra: "<file> line N" | "default"
    warnings: tuple[str, ...]
    _raw: Mapping[str, str]  # resolved text: every known key, then the extra keys of the file
    _env_secrets: tuple[str, ...]  # values of secret-named environment variables that a key refers to (${..})
    # -- target
    lium_target: str
    lium_api_key: str
    lium_lookup_timeout_secs: int
    ops_default_host: str
    lium_targets: tuple[str, ...]
    ops_hosts: tuple[str, ...]
    ssh_key_path: str
    ssh_strict_host_keys: bool
    ssh_connect_timeout: int
    wf_persist_secs: int
    # -- lium
    lium_pod_name: str
    lium_executor_id: str
    lium_gpu: str
    lium_count: int | None
    lium_country: str
    lium_ports: int | None
    lium_ttl: str
    lium_volume: str
    lium_volumes: tuple[str, ...]
    lium_yes: bool
    # -- layout
    remote_env_path: str
    ops_remote_repo: str
    ops_remote_outputs_dir: str
    data_dir: str
    hf_home: str
    local_artifacts_dir: str
    # -- workflow
    wf_fsm_enforce: bool
    wf_state_file: str
    wf_tmux_session: str
    wf_tmux_socket: str
    task_timeout_secs: int
    kill_grace_secs: int
    # -- bootstrap
    prereq_commands: tuple[str, ...]
    auto_install_prereqs: bool
    apt_packages: tuple[str, ...]
    bootstrap_script: str
    wandb_setup_script: str
    run_wandb_setup: bool
    # -- checkout
    repo_url: str
    checkout_branch: str
    checkout_pr: str
    expect_git_sha: str
    checkout_force_clean: bool
    remote_python_bin: str
    venv_recreate: bool
    cpu_only: bool
    repo_install_cmd: str
    download_fineweb: bool
    fineweb_download_cmd: str
    wf_mount_table: str
    data_link_dir: str
    data_check: tuple[str, ...]
    data_prepare_cmd: str
    data_link: str
    # -- sweep
    sweep_csv: str
    sweep_match: str
    sweep_start_at: str
    sweep_limit: int | None
    sweep_force: bool
    sweep_fail_fast: bool
    sweep_tmux_session: str
    sweep_wandb: bool
    wandb_project: str
    wandb_group: str
    train_workdir: str
    train_script: str
    train_arg_style: str
    train_inject: tuple[str, ...]
    train_nproc: int | None
    train_launcher: str
    run_template: str
    run_gpus: str
    wf_fake_gpus: int | None
    rdzv_base_port: int
    rdzv_host: str
    rdzv_port: int
    rdzv_join_secs: int
    run_retries: int
    retry_on: tuple[str, ...]
    retry_backoff_secs: int
    run_stall_secs: int
    resume_args: str
    resume_when: str
    pod_price_per_hour: float | None
    sweep_budget_usd: float | None
    recover_after_secs: int
    recover_max: int
    keep_previous: int
    sweep_common_overrides: str
    run_timeout_secs: int
    run_out_mode: str
    run_out_local_root: str
    sync_interval_secs: int
    metric_patterns: tuple[str, ...]
    metric_presets: tuple[str, ...]
    metric_columns: tuple[str, ...]
    # -- secrets
    wandb_api_key: str
    hf_token: str
    # -- misc
    extra_env_keys: tuple[str, ...]

    def __repr__(self) -> str:  # never the values: secrets live among them
        return f"Settings(path={self.path!r})"

    def raw(self, name: str) -> str:
        """The resolved text of a key (known or extra) as the file gave it, before its check."""
        return self._raw[name]

    @property
    def extras(self) -> dict[str, str]:
        """The file's keys that are not in the KEYS table, resolved (they reach the pod environment)."""
        return {k: v for k, v in self._raw.items() if k not in KEYS_BY_NAME}

    def override(self, changes: Mapping[str, str]) -> Settings:
        """These settings with some known keys set to other text (checked as the file's values are)."""
        typed: dict[str, Any] = {}
        for name, value in changes.items():
            key = KEYS_BY_NAME[name]
            try:
                typed[key.attr] = key.typed(value)
            except Invalid as exc:
                raise ConfigError(invalid_line(name, value, exc, self.secret_values())) from None
        return dataclasses.replace(self, _raw={**self._raw, **changes}, **typed)

    def secret_values(self) -> list[str]:
        """Values never to be shown (for redacting remote output too); longest first."""
        return shown_forms([*(v for k, v in self._raw.items() if is_secret(k)), *self._env_secrets])

    def pod_env_text(self) -> str:
        """The file written at REMOTE_ENV_PATH: `KEY='value'` lines that bash can source exactly."""
        lines = ["# written by wfops from " + (self.path.name if self.path else "defaults")
                 + "; edit that file, not this one"]
        for name, value in self._raw.items():
            key = KEYS_BY_NAME.get(name)
            if (key is not None and not key.pod) or (key is None and name.startswith("LIUM_")):
                continue
            quote = qpath if key is not None and key.pod_path else shlex.quote
            lines.append(f"{name}={quote(value)}")
        return "\n".join(lines) + "\n"

    def pod_env_sha256(self) -> str:
        return hashlib.sha256(self.pod_env_text().encode()).hexdigest()

    def redacted_values(self) -> dict[str, str]:
        """Every value as it may be shown: secret keys masked, and any secret value inside another value
        (REPO_URL=https://u:${HF_TOKEN}@host/...) masked too."""
        secrets = self.secret_values()
        return {k: mask_secrets(redact(k, v), secrets) for k, v in self._raw.items()}

    def mask(self, text: str) -> str:
        return mask_secrets(text, self.secret_values())

    @property
    def metric_sources(self) -> list[str]:
        """What the pod reads metrics with: METRIC_PATTERNS, then each preset of METRIC_PRESETS as `@name`."""
        return [*self.metric_patterns, *(PRESET_MARK + name for name in self.metric_presets)]

    @property
    def state_file(self) -> str:
        return self.wf_state_file or f"{self.ops_remote_outputs_dir}/{CONTROL_DIR}/{STATE_FILE}"

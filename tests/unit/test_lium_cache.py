"""The target cache and host-key pin checks of wfops.targets.lium_pods, and the ssh_config block of pod.ssh-config."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import stat
from pathlib import Path

import pytest

from wfops.settings.load import parse_settings
from wfops.targets import lium_pods as pods
from wfops.targets.ssh_config import replace_block, ssh_config_block
from wfops.targets.target import Target

ROW = {"id": "11111111-1111-4111-8111-111111111111", "name": "train", "huid": "calm-fox-0a", "status": "RUNNING"}


def host_key_line(name: str, seed: int = 1) -> str:
    blob = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + bytes([seed]) * 32
    return f"{name} ssh-ed25519 {base64.b64encode(blob).decode()}\n"


def lium_target(pin: Path | None) -> Target:
    return Target(kind="lium", label="lium pod train (x)", host="10.0.0.1", user="root", port=2201,
                  key_filename="/k", known_hosts=str(pin) if pin else None, strict_host_keys=pin is not None,
                  use_ssh_config=False, pod_id=ROW["id"])


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"XDG_CACHE_HOME": str(tmp_path / "cache"), "LIUM_BASE_URL": "http://127.0.0.1:9/api",
            "LIUM_API_KEY": "secret-key-123"}


def settings(value: str = "train"):
    return parse_settings(f"LIUM_TARGET={value}\nSSH_CONNECT_TIMEOUT=7\n", environ={})


def test_a_stored_target_comes_back_within_the_ttl_only(env, tmp_path, monkeypatch):
    pin = tmp_path / "pin"
    pin.write_text(host_key_line("[10.0.0.1]:2201"))
    pods._store("train", env, lium_target(pin), ROW)
    got = pods._cached("train", env, settings())
    assert got is not None and got.from_cache and got.row == ROW
    assert got.target.port == 2201 and got.target.connect_timeout == 7 and got.target.known_hosts == str(pin)
    assert got.target in pods._FROM_CACHE
    path = pods.cache_path(env)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert "secret-key-123" not in path.read_text()
    real_time = pods.time.time
    monkeypatch.setattr(pods.time, "time", lambda: real_time() + pods.CACHE_TTL_SECS + 1)
    assert pods._cached("train", env, settings()) is None


def test_the_cache_is_keyed_by_target_api_and_key(env, tmp_path):
    pods._store("train", env, lium_target(None), ROW)
    assert pods._cached("train", env, settings()) is not None
    assert pods._cached("eval", env, settings("eval")) is None
    assert pods._cached("train", {**env, "LIUM_BASE_URL": "http://other/api"}, settings()) is None
    assert pods._cached("train", {**env, "LIUM_API_KEY": "another-key"}, settings()) is None


def test_a_missing_pin_invalidates_the_entry(env, tmp_path):
    pin = tmp_path / "pin"
    pods._store("train", env, lium_target(pin), ROW)
    assert pods._cached("train", env, settings()) is None  # no pin file: look again rather than fail later


def test_forget_by_value_and_by_pod(env):
    pods._store("train", env, lium_target(None), ROW)
    pods._store(ROW["id"], env, lium_target(None), ROW)
    pods._store("other", env, dataclasses.replace(lium_target(None), pod_id="x"), dict(ROW, id="x"))
    pods.forget("train", environ=env)
    assert pods._cached("train", env, settings()) is None
    assert pods._cached(ROW["id"], env, settings(ROW["id"])) is not None
    pods.forget(pod_id=ROW["id"], environ=env)
    entries = json.loads(pods.cache_path(env).read_text())["entries"]
    assert [e["target"]["pod_id"] for e in entries.values()] == ["x"]


def test_a_corrupt_cache_is_ignored(env):
    path = pods.cache_path(env)
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert pods._cached("train", env, settings()) is None
    pods._store("train", env, lium_target(None), ROW)
    assert pods._cached("train", env, settings()) is not None


def test_is_pinned_reads_plain_and_bracketed_entries(tmp_path):
    pin = tmp_path / "pin"
    assert not pods.is_pinned(pin, "10.0.0.1", 2201)
    pin.write_text(host_key_line("[10.0.0.1]:2201") + host_key_line("10.0.0.9", 2))
    assert pods.is_pinned(pin, "10.0.0.1", 2201)
    assert pods.is_pinned(pin, "10.0.0.9", 22)
    assert not pods.is_pinned(pin, "10.0.0.1", 22)


def test_resolve_again_only_retries_cached_lium_targets(env):
    ssh = Target(kind="ssh", label="root@h:22", host="h")
    assert pods.resolve_again(settings(), ssh) is None
    assert pods.resolve_again(settings(), Target(kind="lium", label="never cached")) is None


# ------------------------------------------------------------------ ssh_config blocks

def test_ssh_config_block_for_a_lium_pod():
    block = ssh_config_block("train", lium_target(Path("/h/.lium/known_hosts/p d")), "lium pod train")
    assert block.splitlines() == [
        "# >>> wfops train: lium pod train", "Host train", "    HostName 10.0.0.1", "    Port 2201",
        "    User root", "    IdentityFile /k", "    IdentitiesOnly yes",
        '    UserKnownHostsFile "/h/.lium/known_hosts/p d"', "    StrictHostKeyChecking yes", "# <<< wfops train",
    ]


def test_replace_block_keeps_everything_else():
    old = "Host a\n    HostName a\n" + ssh_config_block("train", lium_target(None), "old") + "Host z\n"
    new = replace_block(old, "train", ssh_config_block("train", lium_target(None), "new"))
    assert new.startswith("Host a\n    HostName a\nHost z\n")
    assert new.count("Host train") == 1 and "wfops train: new" in new and "wfops train: old" not in new
    assert replace_block("", "gpu", "B\n") == "B\n"
    assert replace_block("Host x", "gpu", "B\n") == "Host x\nB\n"

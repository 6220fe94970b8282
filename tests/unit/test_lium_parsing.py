"""Pure helpers of wfops.targets.lium_cli: pod selection,
 ssh_cmd parsing, error envelopes, key discovery, pod.up args."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from wfops.errors import EXIT_LIUM, LiumError, NotFoundError, UsageError
from wfops.targets.lium_cli import LiumFailure, LiumUnreachable, error_from, parse_envelope
from wfops.targets.lium_rows import (
    find_ssh_key,
    known_hosts_name,
    not_ready_reason,
    parse_ssh_cmd,
    pin_path,
    select_pod,
    ttl_words,
    up_argv,
)

A = {"index": 1, "id": "11111111-1111-4111-8111-111111111111", "huid": "calm-fox-0a", "name": "train",
     "status": "RUNNING", "ssh_cmd": "ssh root@10.0.0.1 -p 2201"}
B = {"index": 2, "id": "22222222-2222-4222-8222-222222222222", "huid": "brave-owl-0b", "name": "eval",
     "status": "PENDING", "ssh_cmd": None}
C = {"index": 3, "id": "33333333-3333-4333-8333-333333333333", "huid": "lunar-hawk-0c", "name": "train",
     "status": "RUNNING", "ssh_cmd": "ssh root@10.0.0.3"}


# ------------------------------------------------------------------ select_pod

@pytest.mark.parametrize("value, expected", [
    ("eval", B), (A["id"], A), ("calm-fox-0a", A), ("1", A), ("2", B), (" 3 ", C), (C["id"], C),
])
def test_select_pod_by_name_uuid_huid_and_row(value, expected):
    assert select_pod([A, B, C], value) is expected


def test_a_shared_name_is_ambiguous_and_lists_the_candidates():
    with pytest.raises(UsageError) as err:
        select_pod([A, B, C], "train")
    assert err.value.message == (
        f"LIUM_TARGET=train is ambiguous: 2 pods share it: train (calm-fox-0a, id {A['id']}) RUNNING; "
        f"train (lunar-hawk-0c, id {C['id']}) RUNNING; set LIUM_TARGET to one of their UUIDs")


def test_a_uuid_wins_even_when_a_name_repeats():
    clash = dict(B, name=A["id"])
    assert select_pod([A, clash], A["id"]) is A


def test_unknown_names_and_rows_are_not_found():
    with pytest.raises(NotFoundError, match=r"no Lium pod matches LIUM_TARGET=nope .*lium ps lists: train, eval"):
        select_pod([A, B], "nope")
    with pytest.raises(NotFoundError, match=r"LIUM_TARGET=4 is a `lium ps` row number, but lium ps lists rows 1-3"):
        select_pod([A, B, C], "4")
    with pytest.raises(NotFoundError, match="lists no pods"):
        select_pod([], "1")


def test_rows_without_an_index_count_from_one():
    rows = [dict(A, index=None), dict(B, index=None)]
    assert select_pod(rows, "2") is rows[1]


# ------------------------------------------------------------------ readiness

def test_not_ready_reasons():
    assert not_ready_reason(A) is None
    assert not_ready_reason(B) == "is PENDING, not RUNNING; pod.wait waits until it is ready"
    assert not_ready_reason(dict(A, ssh_cmd=None)) == ("is RUNNING but has no SSH command yet; pod.wait waits "
                                                       "until it is ready")
    assert not_ready_reason(dict(A, status="failed")) == ("is FAILED and will not become ready; remove it "
                                                          "with pod.down")


# ------------------------------------------------------------------ ssh_cmd

@pytest.mark.parametrize("cmd, expected", [
    ("ssh root@1.2.3.4 -p 20301", ("root", "1.2.3.4", 20301)),
    ("ssh ubuntu@pod-7.example.com", ("ubuntu", "pod-7.example.com", 22)),
    ("ssh root@::1 -p 22", ("root", "::1", 22)),
])
def test_parse_ssh_cmd_accepts_the_two_forms(cmd, expected):
    assert parse_ssh_cmd(cmd) == expected


@pytest.mark.parametrize("cmd", [
    "ssh -p 22 root@1.2.3.4",  # options first: not the API's form
    "ssh root@1.2.3.4 -o ProxyCommand=evil",
    "ssh root@1.2.3.4 -p 0",
    "ssh root@1.2.3.4 -p 70000",
    "ssh root@1.2.3.4 -p 22 extra",
    "ssh root@$(touch x)",
    "ssh root@host;rm",
    "ssh -oProxyCommand=x@h",
    "ssh @host",
    "ssh root@",
    "scp root@1.2.3.4",
    "ssh 'root@1.2.3.4",
    "",
])
def test_parse_ssh_cmd_refuses_anything_else(cmd):
    with pytest.raises(LiumError, match="the Lium API sent an ssh command wfops does not accept"):
        parse_ssh_cmd(cmd)


def test_known_hosts_names():
    assert known_hosts_name("1.2.3.4", 22) == "1.2.3.4"
    assert known_hosts_name("1.2.3.4", 2201) == "[1.2.3.4]:2201"


# ------------------------------------------------------------------ error envelopes

def envelope(code: str, message: str, hint: str = "", data: dict | None = None) -> str:
    env = {"ok": False, "error": {"code": code, "message": message, "hint": hint, "exit_code": 3}}
    if data:
        env["data"] = data
    return "renting…\nwaiting for x… FAILED\n" + json.dumps(env) + "\n"


def test_an_api_error_becomes_one_line_with_the_hint():
    err = error_from("lium ps", 3, envelope("invalid_api_key", "Invalid API key (key a…b)", "Check\nthe key"))
    assert type(err) is LiumFailure and err.code == EXIT_LIUM
    assert err.message == "lium ps: Invalid API key (key a…b) (hint: Check the key)"
    assert err.lium_code == "invalid_api_key" and err.lium_exit == 3


def test_a_hint_already_in_the_message_is_not_repeated():
    err = error_from("lium rm", 5, envelope("pod_not_found", "No pods match targets: x; run lium ps", "run lium ps"))
    assert err.message == "lium rm: No pods match targets: x; run lium ps"


def test_the_billing_pod_of_a_failed_up_is_kept():
    err = error_from("lium up", 3, envelope("pod_start_failed", "Pod x failed", data={"pod_id": "p-1",
                                                                                      "pod_name": "mypod"}))
    assert err.data == {"pod_id": "p-1", "pod_name": "mypod"}


def test_a_dead_api_is_unreachable():
    msg = ("HTTPConnectionPool(host='127.0.0.1', port=1): Max retries exceeded with url: /api/pods (Caused by "
           "NewConnectionError(\"HTTPConnection(host='127.0.0.1', port=1): Failed to establish a new connection: "
           "[Errno 111] Connection refused\"))")
    err = error_from("lium ps", 1, envelope("unexpected_error", msg), "http://127.0.0.1:1/api")
    assert isinstance(err, LiumUnreachable)
    assert err.message == "lium ps: the Lium API at http://127.0.0.1:1/api is unreachable (Connection refused)"


def test_output_without_an_envelope_keeps_the_last_line():
    err = error_from("lium ps", 1, "Traceback (most recent call last):\n  ...\nKeyError: 'x'\n")
    assert err.message == "lium ps failed (exit 1): KeyError: 'x'"
    assert parse_envelope("{not json\n{\"ok\": true}\n") is None


# ------------------------------------------------------------------ key and pin files

def test_key_discovery_follows_lium_order(tmp_path: Path):
    home = tmp_path
    assert find_ssh_key({}, home) == (None, "")
    (home / ".ssh").mkdir()
    (home / ".ssh" / "id_rsa").write_text("k")
    assert find_ssh_key({}, home)[0] == home / ".ssh" / "id_rsa"
    (home / ".ssh" / "id_ed25519").write_text("k")
    assert find_ssh_key({}, home)[0] == home / ".ssh" / "id_ed25519"
    (home / ".lium").mkdir()
    (home / ".lium" / "config.ini").write_text("[ssh]\nkey_path = ~/keys/lium\n")
    assert find_ssh_key({}, home) == (home / "keys" / "lium", f"{home / '.lium' / 'config.ini'} [ssh] key_path")
    assert find_ssh_key({"LIUM_SSH_KEY_PATH": "/k/env"}, home) == (Path("/k/env"), "LIUM_SSH_KEY_PATH")


def test_pin_path_is_per_pod_id(tmp_path: Path):
    assert pin_path(tmp_path, A["id"]) == tmp_path / ".lium" / "known_hosts" / A["id"]
    assert pin_path(tmp_path, "../../etc/x y").name == ".._.._etc_x_y"


# ------------------------------------------------------------------ pod.up arguments

def test_up_argv_from_the_config_always_has_a_ttl():
    argv, ttl = up_argv({"LIUM_EXECUTOR_ID": "cosmic-hawk-f2", "LIUM_POD_NAME": "mypod", "LIUM_GPU": "H100",
                         "LIUM_COUNT": "2", "LIUM_COUNTRY": "US", "LIUM_PORTS": "3", "LIUM_TTL": "",
                         "LIUM_VOLUME": "id:brave-fox-3a"}, "6h")
    assert ttl == "6h"
    assert argv == ["cosmic-hawk-f2", "-y", "--json", "--ttl", "6h", "--name", "mypod", "--gpu", "H100",
                    "--count", "2", "--country", "US", "--ports", "3", "--volume", "id:brave-fox-3a"]
    assert up_argv({"LIUM_TTL": "90M"}, "6h") == (["-y", "--json", "--ttl", "90m"], "90m")


@pytest.mark.parametrize("values, message", [
    ({"LIUM_EXECUTOR_ID": "3"}, "LIUM_EXECUTOR_ID=3 looks like a row number of `lium ls`"),
    ({"LIUM_EXECUTOR_ID": "-y"}, "LIUM_EXECUTOR_ID='-y' is not a node UUID or huid"),
    ({"LIUM_TTL": "6 hours"}, "LIUM_TTL='6 hours' is not a duration"),
    ({"LIUM_TTL": "0h"}, "LIUM_TTL='0h' is not a duration"),
    ({"LIUM_VOLUME": "brave-fox-3a"}, "LIUM_VOLUME='brave-fox-3a' is not id:<VOLUME_HUID> or new:name=<NAME>"),
])
def test_up_argv_refuses_bad_values(values, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        up_argv(values, "6h")


def test_ttl_words():
    now = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
    assert ttl_words({"removal_scheduled_at": "2026-01-01T18:00:00+00:00"}, now) == \
        "removal at 2026-01-01 18:00 UTC (in 6.0h)"
    assert ttl_words({"removal_scheduled_at": None}, now).startswith("none scheduled")


def test_every_lium_call_is_non_interactive_json_without_a_lingering_master():
    from wfops.targets.lium_cli import LiumCLI

    env = LiumCLI("/x/lium", {"PATH": "/x", "LIUM_NONINTERACTIVE": "0", "LIUM_API_KEY": "k"}).env()
    assert {k: env[k] for k in ("LIUM_NONINTERACTIVE", "LIUM_OUTPUT", "LIUM_SSH_PERSIST",
                                "LIUM_SELF_UPDATE_DISABLE")} == {
        "LIUM_NONINTERACTIVE": "1", "LIUM_OUTPUT": "json", "LIUM_SSH_PERSIST": "0", "LIUM_SELF_UPDATE_DISABLE": "1"}
    assert env["LIUM_API_KEY"] == "k"  # lium's own settings pass through

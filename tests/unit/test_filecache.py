"""agent/filecache.py in one process: what a request's child keeps and gives, what the parent takes."""

from __future__ import annotations

import json
import marshal
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from wfops.agent import filecache, metrics, store


@pytest.fixture
def request_later(monkeypatch) -> Iterator[None]:
    """A kept agent's request that starts 3 s after now (so files written by the test are quiet: not racy); the
    cache is emptied before and after."""
    for name, empty in (("_kept", {}), ("_new", {}), ("_hits", []), ("_used", {}), ("_reads", 0),
                        ("_room", filecache.LIMIT), ("_since_ns", None)):  # each put back after the test
        monkeypatch.setattr(filecache, name, empty)
    filecache.start()
    filecache._since_ns += int((filecache.RACY_SECS + 1) * 1e9)
    yield


def next_request() -> None:
    """The child ends (gives what it kept, the parent takes it) and the next request's child starts, later."""
    filecache.take(filecache.given())
    since = filecache._since_ns
    filecache.start()
    filecache._since_ns = max(filecache._since_ns, since)


def test_outside_a_kept_agent_nothing_is_kept_or_looked_up(tmp_path: Path):
    path = tmp_path / "a.json"
    path.write_text('{"a": 1}')
    assert filecache._since_ns is None
    assert store.load(str(path)) == {"a": 1} and filecache.given() == b""


def test_each_reader_gets_its_own_copy(tmp_path: Path, request_later):
    path = tmp_path / "a.json"
    path.write_text('{"a": [1]}')
    first = store.load(str(path))
    next_request()
    got = store.load(str(path))  # from what was kept
    got["a"].append(2)
    assert store.load(str(path)) == first == {"a": [1]}


def test_what_a_parent_cannot_use_is_dropped(tmp_path: Path, request_later):
    path = tmp_path / "a.json"
    path.write_text('{"a": 1}')
    store.load(str(path))
    whole = filecache.given()
    filecache.take(whole[:-3])  # a child cut off while it wrote
    filecache.take(marshal.dumps([1, 2]))
    filecache.take(b"\xff\x00")
    assert filecache.size() == 0
    filecache.take(whole)
    assert filecache.size() == 1


def later_request() -> None:
    """The child ends (what it gives is taken) and the next one starts, its files quiet."""
    filecache.take(filecache.given())
    filecache.start()
    filecache._since_ns += int((filecache.RACY_SECS + 1) * 1e9)


def test_once_full_a_new_file_takes_the_place_of_one_no_recent_read_used(tmp_path: Path, request_later, monkeypatch):
    monkeypatch.setattr(filecache, "LIMIT", 3)
    monkeypatch.setattr(filecache, "_room", 3)
    paths = [str(tmp_path / f"{i}.json") for i in range(6)]
    for i, path in enumerate(paths):
        Path(path).write_text(json.dumps({"i": i}))
    for path in paths[:5]:  # five files read: the child gives what fits, the parent holds three
        store.load(path)
    later_request()
    assert sorted(k[1] for k in filecache._kept) == paths[:3]
    for _ in range(filecache.STALE_READS + 2):  # the three in use on every read: a newcomer is never kept
        for path in paths[:4]:
            store.load(path)
        later_request()
        assert sorted(k[1] for k in filecache._kept) == paths[:3] and filecache._room == 0
    Path(paths[0]).write_text(json.dumps({"i": 10}))  # a file it holds, changed: its entry is replaced
    filecache._since_ns += int((filecache.RACY_SECS + 1) * 1e9)
    assert store.load(paths[0]) == {"i": 10}
    later_request()
    assert marshal.loads(filecache._kept[("json", paths[0])][1]) == {"i": 10}
    for _ in range(filecache.STALE_READS):  # reads of other files only: what was held is no longer used
        store.load(paths[5])
        later_request()
    assert filecache._room > 0
    for path in paths[3:]:  # newcomers take the places of the least recently used (file 5 is held by now)
        store.load(path)
    later_request()
    assert sorted(k[1] for k in filecache._kept) == paths[3:]


def test_a_read_that_fails_keeps_nothing_and_a_path_is_kept_under_the_file_it_opened(tmp_path: Path, request_later):
    log = tmp_path / "log"
    log.write_text("x")
    st = os.stat(log)

    def failing() -> None:
        raise OSError("EIO")

    with pytest.raises(OSError):
        filecache.recall("log A", str(log), st, failing)
    assert filecache.given() == b""
    other = tmp_path / "other"
    other.write_text("yy")
    # the path's stat said `log`, the read opened `other` (a folder renamed between the two): kept under `other`
    assert filecache.recall("log A", str(log), st, lambda: metrics.read_tail(str(other))) == "yy"
    next_request()
    assert filecache.recall("log A", str(log), st, lambda: "read again") == "read again"
    assert filecache.recall("log A", str(log), os.stat(other), lambda: "not read") == "yy"


def test_a_damaged_file_a_missing_one_and_a_fifo_are_never_kept(tmp_path: Path, request_later):
    (tmp_path / "bad.json").write_text("{bad")
    with pytest.raises(store.Damaged):
        store.load(str(tmp_path / "bad.json"))
    assert store.load(str(tmp_path / "none.json")) is None
    os.mkfifo(tmp_path / "fifo")
    fifo = os.open(tmp_path / "fifo", os.O_RDWR)  # a writer too: opening it to read does not wait
    try:
        assert filecache.recall("json", str(tmp_path / "fifo"), os.stat(tmp_path / "fifo"),
                                lambda: metrics.read_text(str(tmp_path / "fifo"), 1)) == ""
    finally:
        os.close(fifo)
    assert filecache.given() == b""


def test_a_value_is_kept_per_reading_and_per_file(tmp_path: Path, request_later):
    path = str(tmp_path / "log")
    Path(path).write_text("x")
    st = os.stat(path)
    assert filecache.recall("log A", path, st, lambda: metrics.read_tail(path) + "A") == "xA"
    assert filecache.recall("log B", path, st, lambda: metrics.read_tail(path) + "B") == "xB"
    next_request()
    assert filecache.recall("log A", path, st, lambda: "not read") == "xA"
    assert filecache.recall("log B", path, st, lambda: "not read") == "xB"
    assert filecache.recall("log C", path, st, lambda: metrics.read_tail(path) + "C") == "xC"


def test_a_json_file_holding_any_string_is_that_string_not_a_missing_file(tmp_path: Path):
    path = tmp_path / "state.json"
    path.write_text(json.dumps("\u0000no file"))
    with pytest.raises(store.Damaged):  # a JSON document, of the wrong kind
        store.load(str(path))
    assert store.load(str(path), kind=str) == "\0no file"


def test_a_test_leaves_no_request_behind():
    assert filecache._since_ns is None and not filecache._kept and not filecache._new

"""The key of the lean entry's cached fast path (wfops.leancache): any input that may change the request or how the
answer is shown is a miss; the config it looks at is the one find_config takes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from wfops import leancache
from wfops.settings import load
from wfops.sweeps import history
from wfops.targets import replaced

ARGV = ["fsm.status", "--json"]
ENTRY = {"sock": "/nonexistent", "script": "echo hi\n", "secrets": ["s3cr3t-value"]}


@pytest.fixture()
def place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with a config, a cache of its own and no WORKFLOW_CONFIG."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "workflow.env").write_text("OPS_DEFAULT_HOST=a@h\n")
    monkeypatch.chdir(work)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("WORKFLOW_CONFIG", raising=False)
    return work


def stamp(argv: list[str] = ARGV, explicit: str | None = None) -> dict:
    return leancache.key(argv, leancache.config_probes(explicit, os.getcwd(), os.environ))


def keep(argv: list[str] = ARGV, explicit: str | None = None) -> None:
    leancache.save(argv, stamp(argv, explicit), ENTRY)


def test_an_unchanged_command_finds_its_entry_kept_privately(place: Path):
    keep()
    assert leancache.lookup(ARGV) == ENTRY
    (kept,) = (Path(os.environ["XDG_CACHE_HOME"]) / "wfops" / "lean").iterdir()
    assert kept.stat().st_mode & 0o777 == 0o600 and kept.parent.stat().st_mode & 0o777 == 0o700


def test_the_config_edited_is_a_miss(place: Path):
    keep()
    (place / "workflow.env").write_text("OPS_DEFAULT_HOST=b@h\n")
    assert leancache.lookup(ARGV) is None
    keep()
    os.utime(place / "workflow.env", ns=(1, 1))  # same bytes, another mtime: a miss too
    assert leancache.lookup(ARGV) is None


def test_an_environment_variable_changed_or_added_is_a_miss(place: Path, monkeypatch: pytest.MonkeyPatch):
    keep()
    monkeypatch.setenv("WF_POD", "other")
    assert leancache.lookup(ARGV) is None
    monkeypatch.delenv("WF_POD")
    assert leancache.lookup(ARGV) == ENTRY
    monkeypatch.setenv("HOME", "/elsewhere")
    assert leancache.lookup(ARGV) is None


def test_another_command_line_or_directory_is_a_miss(place: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    keep()
    assert leancache.lookup(["fsm.status"]) is None
    other = tmp_path / "other"
    other.mkdir()
    (other / "workflow.env").write_text("OPS_DEFAULT_HOST=a@h\n")
    monkeypatch.chdir(other)
    assert leancache.lookup(ARGV) is None


def test_a_config_that_find_config_would_now_take_instead_is_a_miss(place: Path):
    (place / "workflow.env").unlink()
    (place / "infra_scripts").mkdir()
    (place / "infra_scripts" / "workflow.env").write_text("OPS_DEFAULT_HOST=a@h\n")
    keep()
    assert leancache.lookup(ARGV) == ENTRY
    (place / "workflow.env").write_text("OPS_DEFAULT_HOST=a@h\n")  # ./workflow.env comes first now
    assert leancache.lookup(ARGV) is None


def test_a_changed_wfops_code_is_a_miss(place: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    code = tmp_path / "code"
    (code / "sub").mkdir(parents=True)
    (code / "sub" / "m.py").write_text("x = 1\n")
    monkeypatch.setattr(leancache, "_PACKAGE", str(code))
    keep()
    assert leancache.lookup(ARGV) == ENTRY
    (code / "sub" / "m.py").write_text("x = 2\n")
    os.utime(code / "sub" / "m.py", ns=(5, 5))
    assert leancache.lookup(ARGV) is None


def test_a_damaged_entry_is_a_miss(place: Path):
    keep()
    (kept,) = (Path(os.environ["XDG_CACHE_HOME"]) / "wfops" / "lean").iterdir()
    kept.write_text("{not json")
    assert leancache.lookup(ARGV) is None


@pytest.mark.parametrize("layout", ["explicit", "env", "here", "infra", "both", "explicit-missing"])
def test_the_config_probed_is_the_one_find_config_takes(tmp_path: Path, layout: str):
    cwd = tmp_path
    (cwd / "infra_scripts").mkdir()
    (cwd / "mine.env").write_text("")
    explicit = {"explicit": "mine.env", "explicit-missing": "gone.env"}.get(layout)
    environ = {"WORKFLOW_CONFIG": str(cwd / "mine.env")} if layout == "env" else {}
    if layout in ("here", "both"):
        (cwd / "workflow.env").write_text("")
    if layout in ("infra", "both"):
        (cwd / "infra_scripts" / "workflow.env").write_text("")
    probes = leancache.config_probes(explicit, str(cwd), environ)
    if layout == "explicit-missing":
        assert probes == [[str(cwd / "gone.env"), False]]
        with pytest.raises(load.ConfigError):
            load.find_config(explicit, cwd, environ)
        return
    assert probes[-1] == [str(load.find_config(explicit, cwd, environ)), True]


def test_the_names_shared_with_the_full_modules_agree():
    assert leancache.CONFIG_ENV_VAR == load.CONFIG_ENV_VAR and leancache.DEFAULT_LOCATIONS == load.DEFAULT_LOCATIONS
    assert history.DIR == replaced.DIR
    from wfops import lean

    assert set(leancache.COMMANDS) == set(lean.LEAN)


def test_only_the_latest_entries_are_kept(place: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(leancache, "KEEP", 3)
    for limit in range(5):
        keep(["task.list", "--limit", str(limit)])
    assert len(list((Path(os.environ["XDG_CACHE_HOME"]) / "wfops" / "lean").iterdir())) == 3
    assert leancache.lookup(["task.list", "--limit", "4"]) == ENTRY


def test_an_edited_ssh_config_is_a_miss(place: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """~/.ssh/config is part of the keeper's fingerprint (warm.fingerprint): the kept one would be stale."""
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "config").write_text("Host a\n")
    keep()
    assert leancache.lookup(ARGV) == ENTRY
    (tmp_path / ".ssh" / "config").write_text("Host b\n")
    assert leancache.lookup(ARGV) is None


def test_a_keeper_folder_not_ours_or_not_private_is_left_to_the_lean_path(tmp_path: Path):
    import socket

    from wfops.transport import leanwire

    folder = tmp_path / "keepers"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    with socket.socket(socket.AF_UNIX) as sock, pytest.raises(leanwire.Before):
        leanwire._connect(sock, str(folder / "x.sock"))
    folder.chmod(0o700)
    with socket.socket(socket.AF_UNIX) as sock, pytest.raises(FileNotFoundError):  # private: it dials
        leanwire._connect(sock, str(folder / "x.sock"))


def test_commands_that_alternate_configs_keep_one_entry_each(place: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch):
    other = tmp_path / "other.env"
    other.write_text("OPS_DEFAULT_HOST=b@h\n")
    keep()
    monkeypatch.setenv("WORKFLOW_CONFIG", str(other))
    keep()
    assert leancache.lookup(ARGV) == ENTRY
    monkeypatch.delenv("WORKFLOW_CONFIG")
    assert leancache.lookup(ARGV) == ENTRY  # the first is still kept


def test_a_config_edited_while_the_command_ran_is_a_miss_next_time(place: Path):
    """The key is taken before the command reads its config: an edit that lands while the command runs (it may be
    starting the keeper: seconds on a real pod) makes the next command a miss, not a hit on the old request."""
    before = stamp()
    (place / "workflow.env").write_text("OPS_DEFAULT_HOST=b@h\n")  # the edit lands mid-command
    leancache.save(ARGV, before, ENTRY)
    assert leancache.lookup(ARGV) is None
    keep()
    assert leancache.lookup(ARGV) == ENTRY  # the next command keeps the new config's request


def test_the_environment_is_kept_as_a_digest_not_its_values(place: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MY_API_TOKEN", "sk-live-never-on-disk")
    keep()
    (kept,) = (Path(os.environ["XDG_CACHE_HOME"]) / "wfops" / "lean").iterdir()
    assert "sk-live-never-on-disk" not in kept.read_text()
    assert leancache.lookup(ARGV) == ENTRY
    monkeypatch.setenv("MY_API_TOKEN", "sk-live-another")
    assert leancache.lookup(ARGV) is None


def test_a_cache_others_could_write_is_not_used(place: Path):
    keep()
    folder = Path(os.environ["XDG_CACHE_HOME"]) / "wfops" / "lean"
    (kept,) = folder.iterdir()
    folder.chmod(0o777)
    assert leancache.lookup(ARGV) is None
    keep()  # nor written to
    assert [p.name for p in folder.iterdir()] == [kept.name] and leancache.lookup(ARGV) is None
    folder.chmod(0o700)
    kept.chmod(0o666)
    assert leancache.lookup(ARGV) is None
    kept.chmod(0o600)
    assert leancache.lookup(ARGV) == ENTRY


def test_a_checkouts_remote_templates_are_part_of_the_code(place: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch):
    """An editable install renders from the checkout's remote_templates/ (wfops.transport.render.templates_dir):
    an edited template is a miss. (A copy of the layout: touching the real template would make other workers'
    tests miss.)"""
    package, templates = tmp_path / "co" / "wfops", tmp_path / "co" / "remote_templates"
    package.mkdir(parents=True)
    templates.mkdir()
    (package / "x.py").write_text("")
    (templates / "_command.sh.j2").write_text("echo one\n")
    monkeypatch.setattr(leancache, "_PACKAGE", str(package))
    keep()
    assert leancache.lookup(ARGV) == ENTRY
    (templates / "_command.sh.j2").write_text("echo two, longer\n")
    assert leancache.lookup(ARGV) is None


def test_another_keeper_directory_is_a_miss(place: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """XDG_RUNTIME_DIR named but missing: the keepers live in /tmp/wfops-UID; once that folder exists they live
    there (and `wfops disconnect --all` looks there): a request kept for the old keeper is not sent again."""
    monkeypatch.delenv("WFOPS_KEEPER_DIR", raising=False)
    runtime = tmp_path / "runtime"
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    keep()
    assert leancache.lookup(ARGV) == ENTRY
    runtime.mkdir()
    assert leancache.lookup(ARGV) is None

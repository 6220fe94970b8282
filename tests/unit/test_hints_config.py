"""hints.command names the config with -c unless a command pasted here finds that very file by itself, with or
without the WORKFLOW_CONFIG of this process (a script may have set it; the user's shell may have it too)."""

from __future__ import annotations

from pathlib import Path

import pytest

from wfops import hints


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WORKFLOW_CONFIG", raising=False)
    (tmp_path / "workflow.env").write_text("OPS_DEFAULT_HOST=local\n")
    return tmp_path


def _tail(line: str) -> str:
    return line.split(" ", 1)[1]  # after the program (its path depends on how the tests run)


def test_the_config_found_here_needs_no_c(here: Path):
    assert _tail(hints.command("config.show", config=Path("workflow.env"))) == "config.show"


def test_another_config_is_named_quoted(here: Path):
    other = here / "it's a $(pod);.env"
    other.write_text("OPS_DEFAULT_HOST=local\n")
    assert _tail(hints.command("sweep.status", config=other)) == f"sweep.status -c '{here}/it'\"'\"'s a $(pod);.env'"


def test_workflow_config_naming_another_file_keeps_c_on_the_local_one(here: Path, monkeypatch: pytest.MonkeyPatch):
    """`WORKFLOW_CONFIG=pod.env wfops config.init` writes ./workflow.env; a bare `config.show` pasted in that shell
    would show pod.env, so the hint names the file it wrote."""
    (here / "pod.env").write_text("OPS_DEFAULT_HOST=local\n")
    monkeypatch.setenv("WORKFLOW_CONFIG", str(here / "pod.env"))
    assert _tail(hints.command("config.show", config=Path("workflow.env"))) == "config.show -c workflow.env"


def test_workflow_config_set_by_a_script_is_named(here: Path, monkeypatch: pytest.MonkeyPatch):
    (here / "pod.env").write_text("OPS_DEFAULT_HOST=local\n")
    monkeypatch.setenv("WORKFLOW_CONFIG", str(here / "pod.env"))
    assert _tail(hints.command("sweep.wait", config=here / "pod.env")) == f"sweep.wait -c {here}/pod.env"

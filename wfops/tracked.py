"""Tracked tasks: id rules, the command.sh text, and how a final state maps to an exit code. Pure."""

from __future__ import annotations

from datetime import datetime, timezone

from wfops import errors
from wfops.agent.states import STATE_EXIT, VENV_DIR
from wfops.errors import UsageError
from wfops.settings.load import Settings
from wfops.transport.shell import is_pod_name, qpath


def check_task_id(task_id: str | None) -> str:
    if not task_id:
        raise UsageError("--id is required (letters, digits, '.', '_' or '-'; up to 128)")
    if not is_pod_name(task_id) or task_id.endswith("."):
        raise UsageError(
            f"invalid task id {task_id!r}: use letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return task_id


def check_workdir(workdir: str) -> str:
    if workdir and ("\n" in workdir or "\x00" in workdir or not (workdir.startswith(("/", "~/")) or workdir == "~")):
        raise UsageError(f"invalid --workdir {workdir!r}: give an absolute path on the pod (or ~/...)")
    return workdir


def command_script(settings: Settings, task_id: str, command: str, workdir: str) -> str:
    """command.sh: load the pod env, put the checkout's venv first on PATH (when there is one), enter the workdir,
    then the user's command exactly as given."""
    env_path = qpath(settings.remote_env_path)
    venv = qpath(f"{settings.ops_remote_repo.rstrip('/')}/{VENV_DIR}")
    if workdir:
        wd = qpath(workdir)
        enter = f"cd {wd} || {{ printf 'wfops: workdir %s does not exist\\n' {wd} >&2; exit 2; }}"
    else:
        repo = qpath(settings.ops_remote_repo)
        enter = f'cd {repo} 2>/dev/null || cd "$HOME"'
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return (
        "#!/usr/bin/env bash\n"
        f"# wfops tracked task {task_id}, created {created}. The lines after the marker are the command as given.\n"
        f"set -a; . {env_path}; set +a\n"
        f"if [ -x {venv}/bin/python ]; then VIRTUAL_ENV={venv}; PATH=\"$VIRTUAL_ENV/bin:$PATH\"; "
        "export VIRTUAL_ENV PATH; unset PYTHONHOME; fi\n"
        f"{enter}\n"
        "# ---- command ----\n"
        f"{command}\n"
    )


def exit_code_for(state: str) -> int:
    return STATE_EXIT.get(state, errors.EXIT_FAILED)

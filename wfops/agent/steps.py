"""Running the steps of bootstrap and checkout: children with their output on our stderr, progress notes,
failures (exit 6), the fixed bash wrappers that load the pod env, and git credentials kept out of argv."""

from __future__ import annotations

import codecs
import os
import subprocess
import sys

from .registry import Refusal
from .states import EXIT_REMOTE
from .wire import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any, Dict, List, NoReturn, Optional, Tuple

    from .states import Layout

# ENV_FILE ARGV...: run ARGV with the pod env loaded (like every step of a command)
WITH_ENV = 'set -a; . "$1"; set +a; shift; exec "$@"'
# ENV_FILE VENV SHELL_COMMAND: run a user's shell command with the pod env loaded and the venv active
IN_VENV = 'set -a; . "$1"; set +a; . "$2/bin/activate"; exec bash -c "$3"'
# ENV_FILE VENV SCRIPT: the same for a user's command kept in a file (its text never in an argv)
IN_VENV_SCRIPT = 'set -a; . "$1"; set +a; . "$2/bin/activate"; exec bash "$3"'


def note(text: str) -> None:
    sys.stderr.write("wfops: %s\n" % text)
    sys.stderr.flush()


def fail(message: str) -> NoReturn:
    raise Refusal(EXIT_REMOTE, message.replace("\n", " "))


def run(argv: List[str], cwd: Optional[str] = None, env: Optional[Dict[str, str]] = None, stdout: Optional[int] = None,
        stderr: Optional[int] = None) -> int:
    """Run a child (stdin /dev/null, output to our stderr); its status as bash has it (128+N: a signal)."""
    sys.stderr.flush()
    try:
        err = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # sys.stderr replaced by something without an fd
        err = 2
    try:
        rc = subprocess.call(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=err if stdout is None else stdout,
                             stderr=err if stderr is None else stderr)
    except OSError as exc:
        note("cannot run %s: %s" % (argv[0], exc.strerror or exc))
        return 127
    return 128 - rc if rc < 0 else rc


def run_logged(argv: List[str], log: str, cwd: Optional[str] = None, env: Optional[Dict[str, str]] = None) -> int:
    """Run a child (stdin /dev/null) with its output both on our stderr and in `log` (mode 600, replaced);
    its status as bash has it. A log that cannot be created fails the step."""
    try:
        os.makedirs(os.path.dirname(log), exist_ok=True)
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        os.fchmod(fd, 0o600)  # also when an older log was left with another mode
    except OSError as exc:
        fail("cannot create %s: %s" % (log, exc.strerror or exc))
    sys.stderr.flush()
    with open(fd, "wb") as fh:
        try:
            child = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        except OSError as exc:
            note("cannot run %s: %s" % (argv[0], exc.strerror or exc))
            return 127
        assert child.stdout is not None
        text = codecs.getincrementaldecoder("utf-8")("replace")
        with child.stdout:
            while True:
                chunk = os.read(child.stdout.fileno(), 65536)
                fh.write(chunk)
                sys.stderr.write(text.decode(chunk, final=not chunk))
                sys.stderr.flush()
                if not chunk:
                    break
    rc = child.wait()
    return 128 - rc if rc < 0 else rc


def must(argv: List[str], message: str, cwd: Optional[str] = None, env: Optional[Dict[str, str]] = None) -> None:
    if run(argv, cwd=cwd, env=env) != 0:
        fail(message)


# Credentials in REPO_URL (https://user:TOKEN@host/repo.git) never reach an argv (world-readable in
# /proc/*/cmdline) nor .git/config: git gets the URL without them, and this helper hands them over from
# the environment of the git process.
CREDENTIAL_HELPER = ('!f() { test "$1" = get || return 0; '
                     'printf "username=%s\\npassword=%s\\n" "$WFOPS_GIT_USERNAME" "$WFOPS_GIT_PASSWORD"; }; f')


def git_credentials(url: str) -> Tuple[Any, ...]:
    """(URL without credentials, environment for git or None, git -c options)."""
    from urllib.parse import unquote, urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or "@" not in parts.netloc:
        return url, None, []
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    env = dict(os.environ, WFOPS_GIT_USERNAME=unquote(user), WFOPS_GIT_PASSWORD=unquote(password),
               GIT_TERMINAL_PROMPT="0")
    cfg = ["-c", "credential.helper=", "-c", "credential.helper=" + CREDENTIAL_HELPER]
    return urlunsplit(parts._replace(netloc=host)), env, cfg


def with_env(pod: Layout, argv: List[Any]) -> List[Any]:
    return ["bash", "-c", WITH_ENV, "wfops", pod.env_path or os.devnull] + list(argv)


def in_venv_script(pod: Layout, venv: str, script: str) -> List[Any]:
    return ["bash", "-c", IN_VENV_SCRIPT, "wfops", pod.env_path or os.devnull, venv, script]


def in_venv(pod: Layout, venv: str, shell_command: str) -> List[Any]:
    return ["bash", "-c", IN_VENV, "wfops", pod.env_path or os.devnull, venv, shell_command]

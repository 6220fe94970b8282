"""pod.ssh-config's file work: a `Host ALIAS` block for a Target, between markers that a later run replaces, in a
file ~/.ssh/config includes. Pure text functions, and two writes (private, whole or not at all)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from wfops.errors import UsageError
from wfops.targets.providers.ssh import is_alias
from wfops.targets.target import LIUM, LOCAL, SSH, Member, Target

ALIAS_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _ssh_value(value: str) -> str:
    if any(ch in value for ch in '"\n\r'):
        raise UsageError(f"cannot write {value!r} into an ssh_config file")
    return f'"{value}"' if any(ch.isspace() for ch in value) else value


def ssh_config_block(alias: str, target: Target, comment: str) -> str:
    """The `Host ALIAS` block for a target, between markers that a later run replaces."""
    lines = [f"# >>> wfops {alias}: {comment}", f"Host {alias}", f"    HostName {_ssh_value(target.host)}"]
    if target.port:
        lines.append(f"    Port {target.port}")
    if target.user:
        lines.append(f"    User {_ssh_value(target.user)}")
    if target.key_filename:
        lines += [f"    IdentityFile {_ssh_value(target.key_filename)}", "    IdentitiesOnly yes"]
    if target.known_hosts:
        lines += [f"    UserKnownHostsFile {_ssh_value(target.known_hosts)}", "    StrictHostKeyChecking yes"]
    lines.append(f"# <<< wfops {alias}")
    return "\n".join(lines) + "\n"


def replace_block(text: str, alias: str, block: str) -> str:
    """`text` with the block of `alias` replaced (or appended)."""
    start, end = f"# >>> wfops {alias}:", f"# <<< wfops {alias}"
    out, skipping = [], False
    for line in text.splitlines(keepends=True):
        if line.startswith(start):
            skipping = True
            continue
        if skipping:
            if line.rstrip("\n") == end:
                skipping = False
            continue
        out.append(line)
    kept = "".join(out)
    if kept and not kept.endswith("\n"):
        kept += "\n"
    return kept + block


def write_private(path: Path, text: str) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.wfops.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def ensure_include(ssh_dir: Path, managed: Path) -> bool:
    """Make ~/.ssh/config include the managed file (at its top, where an Include applies to every host)."""
    main = ssh_dir / "config"
    text = main.read_text(encoding="utf-8") if main.is_file() else ""
    include = f"Include {_ssh_value(str(managed))}"
    if any(line.strip() == include for line in text.splitlines()):
        return False
    write_private(main, f"# added by wfops pod.ssh-config: Host blocks for pods\n{include}\n\n{text}")
    return True


def default_alias(row: Mapping[str, Any] | None, target: Target) -> str:
    """The pod's name, else its huid (Lium), else `wfops-HOST`."""
    if row:
        for candidate in (row.get("name"), row.get("huid")):
            word = re.sub(r"[^A-Za-z0-9._-]+", "-", str(candidate or "")).strip("-.")
            if word and ALIAS_RE.match(word):
                return word
    return "wfops-" + re.sub(r"[^A-Za-z0-9._-]+", "-", target.host).strip("-.")


def check_wanted(member: Member, target: Target) -> None:
    """UsageError when pod.ssh-config has no block to write for `member`, resolved to `target`."""
    if member.provider == LIUM and target.kind != LIUM:  # lium missing or its API down: OPS_DEFAULT_HOST instead
        raise UsageError(f"pod.ssh-config writes the block of Lium pod {member.name}, and {'; '.join(target.notes)}: "
                         "run it again once lium answers")
    if target.kind == LOCAL:
        raise UsageError("the target is `local` (this machine): it needs no ssh_config entry")
    if target.kind == SSH and is_alias(member.name):
        raise UsageError(f"{member.source}={member.name} is already an ssh alias or host name: `ssh` reaches it "
                         "as it is")

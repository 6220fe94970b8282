"""The data step of checkout: what DATA_CHECK finds in DATA_DIR, the repo's own DATA_PREPARE_CMD, how the data
appears in the training workdir (DATA_LINK: each matched file linked into DATA_LINK_DIR, DATA_LINK_DIR itself a link
to DATA_DIR, or nothing), and keeping wfops' own files (the links, .venv) out of `git status` through the repo's
.git/info/exclude.

Standard library only, Python >= 3.8.
"""

from __future__ import annotations

import glob
import os

from . import store
from .states import DATA_PREPARE_LOG, DATA_PREPARE_SCRIPT
from .steps import fail, in_venv_script, note, run_logged
from .wire import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any, Iterable, List, Optional

    from .states import Layout
    from .wire import Json

EXCLUDE_MARK = "# wfops: its venv and data links (checkout)"
FINEWEB_CHECK = ("fineweb_train_*.bin", "fineweb_val_*.bin")


def matches(data_dir: str, patterns: Optional[Iterable[Any]]) -> List[Json]:
    """[{pattern, matches}] for each DATA_CHECK pattern: the files it matches, relative to DATA_DIR, sorted."""
    out = []
    for pattern in patterns or ():
        found = sorted(os.path.relpath(p, data_dir) for p in glob.glob(os.path.join(data_dir, str(pattern)))
                       if os.path.isfile(p) and not os.path.basename(p).startswith("."))
        out.append({"pattern": str(pattern), "matches": found})
    return out


def missing(data_dir: str, patterns: Optional[Iterable[Any]]) -> List[str]:
    """The DATA_CHECK patterns that match nothing in DATA_DIR."""
    return [c["pattern"] for c in matches(data_dir, patterns) if not c["matches"]]


def prepare(pod: Layout, repo: str, venv: str, data_dir: str, patterns: Iterable[Any], command: str) -> int:
    """DATA_PREPARE_CMD, by bash in the checkout with the venv first on PATH and WF_DATA_DIR set, unless DATA_CHECK
    passes already; its text from a mode-600 file, its output on stderr and in _control/data-prepare.log. 1 when
    it ran; a failure, or data still missing after it, stops checkout (exit 6) naming the log."""
    if not missing(data_dir, patterns):
        note("[prepare] DATA_CHECK already passes in %s: DATA_PREPARE_CMD skipped" % data_dir)
        return 0
    log = os.path.join(pod.control, DATA_PREPARE_LOG)
    script = os.path.join(pod.control, DATA_PREPARE_SCRIPT)
    try:
        os.makedirs(data_dir, exist_ok=True)
        store.write_bytes(script, command.encode() + b"\n")
        os.chmod(script, 0o600)
    except OSError as exc:
        fail("cannot prepare the data step: %s: %s" % (exc.filename, exc.strerror or exc))
    note("[prepare] running DATA_PREPARE_CMD in %s with its venv first on PATH (output kept in %s)" % (repo, log))
    rc = run_logged(in_venv_script(pod, venv, script), log, cwd=repo, env=dict(os.environ, WF_DATA_DIR=data_dir))
    if rc != 0:
        fail("DATA_PREPARE_CMD failed (exit %d); its output is in %s on the pod" % (rc, log))
    left = missing(data_dir, patterns)
    if left:
        fail("DATA_PREPARE_CMD finished but nothing in DATA_DIR=%s matches %s (DATA_CHECK); its output is in %s on "
             "the pod" % (data_dir, " ".join(left), log))
    note("[prepare] done: DATA_CHECK passes in %s" % data_dir)
    return 1


def matched_files(checks: Iterable[Json]) -> List[str]:
    """Every file the checks matched, once, in order."""
    seen: List[str] = []
    for check in checks:
        for name in check["matches"]:
            if name not in seen:
                seen.append(name)
    return seen


def link_facts(data_dir: str, link: str, mode: str, checks: Iterable[Json]) -> Json:
    """What is linked already: shards mode, the matched files linked by name; dir mode, the link itself."""
    facts: Json = {"dir": link, "mode": mode, "linked": [], "is_data_link": False,
             "occupied": os.path.lexists(link) and not os.path.islink(link)}
    if mode == "dir":
        facts["is_data_link"] = os.path.islink(link) and os.path.realpath(link) == os.path.realpath(data_dir)
    elif mode == "shards":
        for name in matched_files(checks):
            target = os.path.join(link, os.path.basename(name))
            if os.path.islink(target) and os.path.realpath(target) == os.path.realpath(os.path.join(data_dir, name)):
                facts["linked"].append(name)
    return facts


def relink(target: str, dest: str) -> None:
    """ln -sfn TARGET DEST, as a temp link renamed over DEST (never a half-made link)."""
    tmp = "%s.wfops-link.%d" % (dest, os.getpid())
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(target, tmp)
    try:
        os.replace(tmp, dest)
    except OSError:
        os.unlink(tmp)
        raise


def link(data_dir: str, link_path: str, mode: str, patterns: Optional[Iterable[Any]]) -> List[str]:
    """Make the data appear in the training workdir; returns the links made (paths)."""
    if mode == "dir":
        os.makedirs(os.path.dirname(link_path.rstrip("/")) or "/", exist_ok=True)
        relink(data_dir, link_path.rstrip("/"))
        return [link_path.rstrip("/")]
    if mode != "shards":
        return []
    made: List[str] = []
    if os.path.realpath(link_path) == os.path.realpath(data_dir):
        return made
    os.makedirs(link_path, exist_ok=True)
    for name in matched_files(matches(data_dir, patterns)):
        dest = os.path.join(link_path, os.path.basename(name))
        relink(os.path.join(data_dir, name), dest)
        made.append(dest)
    return made


def exclude(repo: str, paths: Iterable[str]) -> int:
    """Add `paths` (inside the repo) to .git/info/exclude, once; returns how many were new."""
    git_dir = os.path.join(repo, ".git")
    if not os.path.isdir(git_dir):
        return 0
    info = os.path.join(git_dir, "info", "exclude")
    try:
        with open(info, encoding="utf-8") as fh:
            have = fh.read()
    except OSError:
        have = ""
    root = os.path.realpath(repo)
    lines = set(have.splitlines())
    new = []
    for path in paths:
        full = os.path.join(os.path.realpath(os.path.dirname(os.path.abspath(path))), os.path.basename(path))
        rel = os.path.relpath(full, root)
        if rel.startswith(".."):
            continue  # outside the checkout: not git's business
        entry = "/" + rel.replace(os.sep, "/").strip("/")
        if entry not in lines and entry not in new:
            new.append(entry)
    if new:
        os.makedirs(os.path.dirname(info), exist_ok=True)
        text = "" if not have or have.endswith("\n") else "\n"
        text += "" if EXCLUDE_MARK in lines else EXCLUDE_MARK + "\n"
        with open(info, "a", encoding="utf-8") as fh:
            fh.write(text + "".join(e + "\n" for e in new))
    return len(new)

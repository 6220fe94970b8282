"""One way in (issue 19): no module outside wfops/settings/ and wfops/targets/ reads a target key itself; every
command asks wfops.targets.resolve for its pod(s)."""

from __future__ import annotations

import re
from pathlib import Path

import wfops

ROOT = Path(wfops.__file__).parent
KEY = re.compile(r"""["'](LIUM_TARGETS?|OPS_DEFAULT_HOST|OPS_HOSTS)["']"""  # settings.values["LIUM_TARGET"]
                 r"|\.(lium_targets?|ops_default_host|ops_hosts)\b")  # settings.lium_target
OWNERS = ("settings", "targets", "agent")  # the agent never sees the client's config


def test_only_settings_and_targets_read_a_target_key():
    readers = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in OWNERS:
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if KEY.search(line):
                readers.append(f"{rel}:{n}: {line.strip()}")
    assert readers == []


def test_the_grep_sees_a_reader():  # the test above can fail: a line like the old pod.down's is found
    assert KEY.search('value = settings.values["LIUM_TARGET"].strip()')
    assert KEY.search("value = settings.lium_target.strip()")
    assert KEY.search("if settings.lium_targets or settings.ops_hosts:")
    assert not KEY.search('raise UsageError(f"set LIUM_TARGET=NAME")')

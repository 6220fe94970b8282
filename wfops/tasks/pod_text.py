"""What pod.status, pod.up and pod.down print for people (the --json forms are their data as it is)."""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from typing import Any

from wfops.output import pairs
from wfops.targets.lium_rows import pod_words, row_items


def _gib(n: object) -> str:
    return "?" if n is None else f"{int(n) / 2**30:.1f} GiB"  # type: ignore[call-overload]


def _disk_words(d: Mapping[str, Any] | None, mount_words: bool) -> str:
    if not d:
        return "-"
    where = d.get("mount_point") or "?"
    fs = d.get("fs_type") or "?"
    space = f"{_gib(d.get('free_bytes'))} free of {_gib(d.get('total_bytes'))}"
    if mount_words:
        if not d.get("exists"):
            return f"missing (its disk: {fs} on {where}, {space})"
        if d.get("is_mount"):
            return f"a mount: {fs} from {d.get('source') or '?'}, {space}"
        return f"not a mount point (on {where}, {fs}), {space}"
    place = d.get("path") if d.get("exists") else f"{d.get('path')} (not there yet; nearest: {d.get('existing')})"
    return f"{place}: {fs} on {where}, {space}"


def status_human(data: dict) -> str:
    t = data.get("target") or {}
    blocks = []
    head: list[tuple[str, object]] = [("target", t.get("label") if t else f"LIUM_TARGET={data.get('lium_target')}")]
    row = data.get("lium")
    if row:
        head += row_items(row)
    blocks.append(pairs(head))
    facts = data.get("pod")
    if not data.get("reachable"):
        blocks.append(pairs([("reachable", f"no: {data.get('error')}")]))
    elif facts:
        gpus = facts.get("gpus") or []
        gpu_text = "; ".join(gpus) if gpus else f"none ({facts.get('gpu_error') or 'nvidia-smi lists no GPU'})"
        blocks.append(pairs([
            ("reachable", "yes"),
            ("user", facts.get("user")),
            ("host", facts.get("host")),
            ("gpus", gpu_text),
            ("/mnt", _disk_words(facts.get("mnt"), mount_words=True)),
            ("repo disk", _disk_words(facts.get("repo"), mount_words=False)),
            ("state", facts.get("state")),
        ]))
    return "\n\n".join(blocks)


def up_human(data: dict[str, Any]) -> str:
    row = data["pod"]
    price = f"${float(row['price_per_hour']):.2f}/h" if row.get("price_per_hour") is not None else "price unknown"
    verb = "reusing the running" if data.get("reused") else "rented"
    return (
        f"{verb} Lium pod {pod_words(row)}: {row.get('config') or row.get('gpu_type') or '?'} at {price}; "
        f"{dict(row_items(row))['ttl']}\n"
        f"SSH answers at {data['ssh']} (workflow state {data['state']})\n\n"
        f"put this line in your config ({data['config_file']}):\n{data['config_line']}\n"
        f"(LIUM_TARGET={row.get('name')} works too while no other pod has that name)"
    )


def down_human(row: Mapping[str, Any], gone: Mapping[str, Any], pod_side: Mapping[str, Any] | None,
                hint: str) -> str:
    spent = gone.get("spent_usd")
    lines = [f"removed Lium pod {pod_words(row)}" + (f": up {gone.get('uptime')}" if gone.get("uptime") else "")
             + (f", spent ≈${float(spent):.2f}" if spent is not None else "")]
    if pod_side:
        lines.append(f"workflow state on the pod: INIT (was {pod_side.get('state_before')})")
    lines.append(hint)
    return "\n".join(lines)


def pasteable_path(path: str) -> str:
    """A pod path as a word to paste after `HOST:` (rsync): as is when safe (a leading `~/` stays unquoted, so it
    is the pod's home), else quoted."""
    if re.fullmatch(r"[\w./~+-]+", path):
        return path
    return ("~/" + shlex.quote(path[2:])) if path.startswith("~/") else shlex.quote(path)

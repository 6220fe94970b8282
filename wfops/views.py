"""The human text of what read-only commands answer (fsm.status, task.status / wait / list, sweep.list). Pure: no
invoke, so that the tasks (wfops.tasks) and the lean entry (wfops.lean) show the same data the same way."""

from __future__ import annotations

from wfops.output import duration, pairs, quiet_note, table
from wfops.sweeps.status import totals_line


def fsm_text(data: dict) -> str:
    if data.get("damaged"):
        return pairs([("state", "unknown: the state file is damaged"), ("problem", data["damaged"]),
                      ("file", data.get("file"))])
    effective = data.get("effective") or {}
    head = pairs([
        ("state", f"{data.get('state')}" + (f" (commands see {effective['state']}: {effective['why']})"
                                            if effective else "")),
        ("since", data.get("updated_at") or "never set (no state file yet)"),
        ("by", data.get("command")),
        ("reason", data.get("reason")),
        ("file", data.get("file")),
    ])
    history = data.get("history") or []
    if not history:
        return head
    rows = [(h.get("at"), h.get("from"), h.get("to"), h.get("command"), h.get("reason")) for h in history[-10:]]
    return head + "\n\nrecent transitions (oldest first)\n" + table(("at", "from", "to", "command", "reason"), rows)


def task_summary(t: dict) -> str:
    items = [
        ("task", t.get("id")),
        ("state", f"{t.get('state')}" + (f" (recorded: {t['recorded_state']})" if t.get("recorded_state") else "")),
        ("exit code", t.get("exit_code")),
        ("created", t.get("created_at")),
        ("started", t.get("started_at")),
        ("ended", t.get("ended_at")),
        ("duration", duration(t.get("duration_secs"))),
        ("timeout", f"{t['timeout_secs']}s" if t.get("timeout_secs") else "none"),
        ("tmux", f"{t.get('tmux_session')}:{t.get('tmux_window')}" if t.get("tmux_window") else None),
    ]
    if quiet_note(t.get("quiet_secs")):
        items.append(("output", quiet_note(t.get("quiet_secs"))))
    if t.get("reason"):
        items.append(("note", t["reason"]))
    return pairs(items)


def task_status_text(data: dict) -> str:
    tail = data.get("tail") or []
    text = task_summary(data)
    if tail:
        text += f"\n\n--- stdout.log (last {len(tail)} lines)\n" + "\n".join(tail)
    return text


def task_list_text(data: dict) -> str:
    tasks = data.get("tasks") or []
    if not tasks:
        return "no tracked tasks on the pod yet (start one with task.run)"
    rows = [(t.get("id"), t.get("state"), t.get("exit_code"), t.get("started_at"),
             duration(t.get("duration_secs")), t.get("reason")) for t in tasks]
    more = data.get("total", 0) - len(tasks)
    return table(("id", "state", "exit", "started", "duration", "note"), rows) + (
        f"\n({more} older not shown; --limit 0 shows all)" if more > 0 else "")


def sweep_list_text(data: dict) -> str:
    rows = [(s["sweep_id"], s.get("started_at") or "", s["state"] + (f" ({s['reason']})" if s.get("reason") else ""),
             totals_line(s.get("totals") or {})) for s in data.get("sweeps") or []]
    return table(("sweep", "started", "state", "totals"), rows) if rows else "no sweep on this pod"


# each read-only command's text of one pod's answer (but sweep.status: wfops.sweeps.status), for the lean paths
# (wfops.leancache, wfops.leanpods)
TEXT = {"fsm.status": fsm_text, "task.status": task_status_text, "task.list": task_list_text,
        "sweep.list": sweep_list_text}

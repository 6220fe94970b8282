"""A managed sweep's record on this machine (`sweep.wait --recover`, wfops.tasks.managed): which pods it rented
(the only ones it ever removes), how many recoveries it spent (RECOVER_MAX), the history of its pods (lost,
rented at what price, removed, restarted) and which pod ran which attempt of a run, for sweep.status.

`LOCAL_ARTIFACTS_DIR/.fleet/<sweep id>.recover.json`, written whole (a temp file renamed into place). Also the
pure decisions of the loop: when a silent pod counts as lost (`Silence`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from wfops.errors import ConflictError, WfopsError
from wfops.settings.load import Settings
from wfops.sweeps import history
from wfops.targets.replaced import DIR

SUFFIX = history.SUFFIX


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Book:
    """The record of one managed sweep (`sweep_id` "" until a pod has named it: kept in memory until then)."""

    settings: Settings
    sweep_id: str = ""
    doc: dict[str, Any] = field(default_factory=lambda: {"rented": [], "recoveries": 0, "history": [],
                                                         "attempts": {}})
    pod: str = ""  # a single pod's config name: its record is kept (`.pending-…`) until the sweep is known

    @classmethod
    def for_pod(cls, settings: Settings, pod: str) -> Book:
        """The record of a managed sweep on the config's one pod `pod`, with what an earlier command recorded before
        it knew the sweep (its pod was down: a rent, a loss) and could not bind, e.g. as it was interrupted."""
        book = cls(settings, pod=pod)
        try:
            old = json.loads(book._path().read_text())
        except (OSError, ValueError):
            old = None
        if isinstance(old, dict):
            book.doc.update({k: old[k] for k in book.doc if k in old})
        return book

    @classmethod
    def load(cls, settings: Settings, sweep_id: str) -> Book:
        book = cls(settings)
        book.bind(sweep_id)
        return book

    def _path(self) -> Path:
        d = Path(self.settings.local_artifacts_dir).expanduser() / DIR
        if self.sweep_id:
            return d / f"{self.sweep_id}{SUFFIX}"
        return d / f".pending-{hashlib.sha1(self.pod.encode()).hexdigest()[:16]}{SUFFIX}"

    def adopt(self, pod_id: str) -> None:
        """Not bound yet (its pod was down from the start): the sweep whose record rented `pod_id` (the pod now
        behind the config's name) is this one, so its pods and recoveries count."""
        if self.sweep_id:
            return
        for path in sorted((Path(self.settings.local_artifacts_dir).expanduser() / DIR).glob(f"*{SUFFIX}")):
            try:
                doc = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if not path.name.startswith(".") and isinstance(doc, dict) and pod_id in (doc.get("rented") or []):
                self.bind(path.name[:-len(SUFFIX)])
                return

    def bind(self, sweep_id: str) -> None:
        """The sweep is known now: what an earlier managed command recorded comes first, then this one's."""
        if self.sweep_id or not sweep_id or "/" in sweep_id or sweep_id.startswith("."):
            return
        pending = self._path() if self.pod else None
        self.sweep_id = sweep_id
        try:
            old = json.loads(self._path().read_text())
        except (OSError, ValueError):
            old = None
        if isinstance(old, dict):
            ours = self.doc
            self.doc = old
            self.doc["rented"] = list(dict.fromkeys([*old.get("rented", []), *ours["rented"]]))
            self.doc["history"] = [*old.get("history", []), *ours["history"]]
            self.doc["recoveries"] = int(old.get("recoveries") or 0) + ours["recoveries"]
            for rid, tries in ours["attempts"].items():
                self.doc.setdefault("attempts", {}).setdefault(rid, []).extend(tries)
        self.save()
        if pending is not None:
            pending.unlink(missing_ok=True)  # merged into the sweep's record

    def save(self) -> None:
        if not self.sweep_id and not self.pod:
            return
        path = self._path()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(dict(self.doc, sweep_id=self.sweep_id), indent=1))
        os.replace(tmp, path)

    # -- what happened
    @property
    def recoveries(self) -> int:
        return int(self.doc.get("recoveries") or 0)

    def spend(self) -> int:
        """One more recovery; returns how many this sweep has spent."""
        self.doc["recoveries"] = self.recoveries + 1
        self.save()
        return self.recoveries

    def unspend(self) -> None:
        """The recovery just spent replaced nothing (the rent was refused or interrupted): it does not count."""
        self.doc["recoveries"] = max(0, self.recoveries - 1)
        self.save()

    @property
    def rented(self) -> list[str]:
        return list(self.doc.get("rented") or [])

    @property
    def renting(self) -> list[str]:
        """The pods this sweep rented and has not removed."""
        gone = {h.get("pod_id") for h in self.doc.get("history") or [] if h.get("event") == "removed"}
        return [p for p in self.rented if p not in gone]

    def note(self, pod: str, event: str, line: str, pod_id: str | None = None) -> None:
        """One step (loss, rented, ready, removed, restarted, stopped) and the line the user was shown."""
        self.doc["history"].append({"at": _now(), "pod": pod, "event": event, "pod_id": pod_id, "line": line})
        if event == "rented" and pod_id:
            self.doc["rented"] = list(dict.fromkeys([*self.rented, pod_id]))
        self.save()

    def unprepared(self, pod: str) -> tuple[str, str] | None:
        """The pod rented in place of config name `pod` that no managed command finished preparing (Ctrl-C between
        its rent and its checkout): (its id, the pod it replaced in words); None when there is none."""
        steps = [h for h in self.doc.get("history") or []
                 if h.get("pod") == pod and h.get("event") in ("rented", "ready")]
        if not steps or steps[-1]["event"] != "rented":
            return None
        earlier = [str(h.get("pod_id")) for h in steps[:-1] if h["event"] == "rented"]
        return str(steps[-1].get("pod_id")), (f"{pod} (id {earlier[-1]})" if earlier else pod)

    def ran(self, run_id: str, attempt: int, where: str, queued: bool = False) -> None:
        """Attempt `attempt` of `run_id` runs on `where` (a pod's words); `queued`: it waits there to start."""
        entry = {"attempt": attempt, "pod": where, **({"queued": True} if queued else {})}
        self.doc.setdefault("attempts", {}).setdefault(run_id, []).append(entry)
        self.save()


@contextmanager
def managing(settings: Settings, names: list[str]) -> Iterator[None]:
    """Held while one `sweep.wait --recover` manages the pods `names` (an flock per pod in `.fleet/`): a second
    one (another terminal) is refused in one line, so that a lost pod is never recovered (rented) twice."""
    d = Path(settings.local_artifacts_dir).expanduser() / DIR
    held: list[IO[str]] = []
    try:
        for name in sorted(set(names)):
            try:
                d.mkdir(parents=True, exist_ok=True)
                lock = d / f".managed-{hashlib.sha1(name.encode()).hexdigest()[:16]}.lock"
                held.append(open(lock, "a+"))  # noqa: SIM115 - held until the command ends
            except OSError as exc:
                raise WfopsError(f"sweep.wait --recover: cannot lock pod {name} in {d}: {exc.strerror or exc}",
                                 ) from None
            try:
                fcntl.flock(held[-1], fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                held[-1].seek(0)
                who = held[-1].read().strip() or "another process"
                raise ConflictError(f"another `sweep.wait --recover` ({who}) manages pod {name} already and recovers "
                                    "it: watch the sweep with `inv sweep.wait` (without --recover)") from None
            held[-1].truncate(0)
            held[-1].write(f"pid {os.getpid()}")
            held[-1].flush()
        yield
    finally:
        for fh in held:
            fh.close()


@dataclass
class Silence:
    """When a pod that does not answer counts as lost: once it has been silent `after` seconds, or at once when
    its provider says it is gone (Lium: FAILED, STOPPED, not listed)."""

    after: float
    since: float | None = None

    def heard(self) -> None:
        self.since = None

    def lost(self, now: float, why: str, gone: str | None) -> str | None:
        """Why the pod is lost now (None: not yet); `why` is the last connection error, `gone` the provider's."""
        if self.since is None:
            self.since = now
        if gone:
            return gone
        if now - self.since >= self.after:
            return f"silent for {int(now - self.since)}s ({why})"
        return None

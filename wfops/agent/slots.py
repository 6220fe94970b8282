"""GPU slots and the order runs start in. Pure: no processes, no files.

The pod's GPUs are slots. A run holds `need` of them (its `gpus` cell, else RUN_GPUS; `all` = every slot)
while it runs and sees exactly those through CUDA_VISIBLE_DEVICES. The policy (docs/sweeps.md "GPU packing"):

- runs start in CSV order whenever enough slots are free;
- when the next run in order does not fit, later runs that fit start in front of it (backfill), but a
  waiting run is overtaken at most `overtake_limit` times (the pod's slot count); after that nothing new
  starts until it fits, so a big run waits at most for the runs already running and that many small ones;
- a run that waits for a retry's back-off holds no place in the order until its time comes.

Standard library only, Python >= 3.8.
"""

from __future__ import annotations

import contextlib
import heapq
import random
import socket

from .states import ALL_GPUS
from .wire import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any, Callable, Container, Dict, Iterator, List, Optional, Tuple

    from .wire import QueueEntry


def need_of(gpus: Optional[str], total: int) -> int:
    """Slots a run asks for: `all` (or empty) = every slot; else its number (which may exceed `total`)."""
    if gpus in (None, "", ALL_GPUS):
        return total
    return int(gpus)


class Slots:
    """Which device ids are free. `ids` are what CUDA_VISIBLE_DEVICES will name (the pod's visible ids)."""

    def __init__(self, ids: List[str]) -> None:
        self.ids = [str(i) for i in ids]
        self.free = list(self.ids)

    @property
    def total(self) -> int:
        return len(self.ids)

    def take(self, n: int) -> List[str]:
        """The n lowest free ids (kept in the pod's order)."""
        got = self.free[:n]
        self.free = self.free[n:]
        return got

    def give(self, ids: List[str]) -> None:
        order = {d: i for i, d in enumerate(self.ids)}
        self.free = sorted(set(self.free) | set(ids), key=order.__getitem__)

    @contextlib.contextmanager
    def without(self, held: List[str]) -> Iterator[None]:
        """`held` is not free meanwhile (GPUs a process outside the sweep holds: Held), and free again after."""
        self.free = [d for d in self.free if d not in held]
        try:
            yield
        finally:
            self.give(held)


class Held:
    """Free GPUs a process outside the sweep holds (nvidia-smi lists a compute process on them): no run gets them
    while it does. `query` gives the busy ids (index and UUID), asked at most every `every` seconds of `clock`;
    `log` hears each change of the held set."""

    def __init__(self, query: Callable[[], Container[str]], log: Callable[[str], None],
                 clock: Callable[[], float], every: float = 2.0) -> None:
        self.query, self.log, self.clock, self.every = query, log, clock, every
        self.busy: Container[str] = ()
        self.asked: Optional[float] = None
        self.shown: List[str] = []
        self.active = False  # set on the pod's own GPUs (not WF_FAKE_GPUS, not CPU_ONLY): nvidia-smi knows them

    def held(self, free: List[str], waiting: int = 1) -> List[str]:
        """Which of `free` are held now; none asked while inactive or while no run waits."""
        if not self.active or not waiting:
            return []
        now = self.clock()
        if self.asked is None or now - self.asked >= self.every:
            self.busy, self.asked = self.query(), now
        held = [d for d in free if d in self.busy]
        if held != self.shown:
            self.log("GPU(s) %s held by a process outside this sweep (nvidia-smi): not handed out while it is"
                     % ",".join(held) if held else "no free GPU is held by a process outside this sweep any more")
            self.shown = held
        return held


class Order:
    """The pending runs, in CSV order, grouped by how many slots they need: first fit in order is the
    smallest order index among the groups that fit, found without walking the whole queue."""

    def __init__(self, total: int, overtake_limit: int) -> None:
        self.total = total
        self.limit = overtake_limit
        self.groups: Dict[int, List[Tuple[int, int, QueueEntry]]] = {}  # need -> heap of (index, seq, entry)
        self.overtaken: Dict[int, int] = {}  # index of a waiting run -> times later runs started before it
        self.seq = 0

    def __len__(self) -> int:
        return sum(len(h) for h in self.groups.values())

    def push(self, index: int, need: int, entry: QueueEntry) -> None:
        self.seq += 1
        heapq.heappush(self.groups.setdefault(need, []), (index, self.seq, entry))

    def head(self) -> Optional[Tuple[int, int]]:
        """(need, index) of the first pending run in order, or None."""
        heads = [(h[0][0], need) for need, h in self.groups.items() if h]
        if not heads:
            return None
        index, need = min(heads)
        return need, index

    def pop_fitting(self, free: int) -> Optional[QueueEntry]:
        """The next run to start with `free` slots free, or None. Counts the overtaking of a waiting head
        and stops backfilling once the head has been overtaken `limit` times."""
        head = self.head()
        if head is None:
            return None
        fits = [(h[0][0], need) for need, h in self.groups.items() if h and need <= free]
        if not fits:
            return None
        index, need = min(fits)
        head_index = head[1]
        if index != head_index:  # backfill: a later run starts in front of the waiting head
            if self.overtaken.get(head_index, 0) >= self.limit:
                return None
            self.overtaken[head_index] = self.overtaken.get(head_index, 0) + 1
        else:
            self.overtaken.pop(head_index, None)
        return heapq.heappop(self.groups[need])[2]

    def replace(self, entry: QueueEntry) -> bool:
        """Put `entry` in the place (order index) of the waiting entry of its run id, if one waits; True then."""
        for heap in self.groups.values():
            for i, (index, seq, old) in enumerate(heap):
                if old["run_id"] == entry["run_id"]:
                    entry["_index"] = index
                    entry.setdefault("attempt", 1)
                    heap[i] = (index, seq, entry)  # the same (index, seq): the heap's order holds
                    return True
        return False

    def remove(self, run_ids: Container[str]) -> List[QueueEntry]:
        """Take the waiting entries of `run_ids` out of the order; returns them."""
        out = []
        for need, heap in self.groups.items():
            gone = [item for item in heap if item[2]["run_id"] in run_ids]
            if gone:
                self.groups[need] = [item for item in heap if item[2]["run_id"] not in run_ids]
                heapq.heapify(self.groups[need])
                out += gone
        for item in out:
            self.overtaken.pop(item[0], None)
        return [item[2] for item in sorted(out)]

    def pop_too_big(self) -> List[QueueEntry]:
        """Runs that can never fit (they ask more slots than the pod has), removed from the order."""
        out = []
        for need in [n for n in self.groups if n > self.total]:
            out += [item[2] for item in sorted(self.groups.pop(need))]
        return out


def port_is_free(port: int) -> bool:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


PORT_SPREAD = 500  # ports are looked for from a random point of [base, base + PORT_SPREAD)


def pick_port(base: int, taken: Container[Any], is_free: Callable[[int], bool] = port_is_free,
              start: Optional[int] = None) -> int:
    """A port from `base` up that no running run of ours holds and nothing else listens on, looked for from a
    random point of the first PORT_SPREAD (another job on the pod, e.g. a hand-started torchrun on 29500, or a
    second queue, is unlikely to race for the same one); then from `base` itself."""
    first = base + (random.randrange(PORT_SPREAD) if start is None else start)
    for port in list(range(first, 65536)) + list(range(base, first)):
        if port not in taken and is_free(port):
            return port
    raise OSError("no free rendezvous port from %d up" % base)

"""A fleet: several pods named by LIUM_TARGETS / OPS_HOSTS, and running one command on all of them at once.

The members are wfops.targets.resolve's (a named Member: provider and name, no copied settings). The fan-out
itself (every member at once, a value or an error each) is wfops.fanout; which commands fan out, and how their
results are shown, is the task layer's business (wfops.tasks._base `PodWork`, `on_pods`).
"""

from __future__ import annotations

from wfops.targets.resolve import POD_ENV, Member, is_fleet, members, names, pick

# The member model lives in wfops.targets.resolve (named here for this module's callers).
__all__ = ["POD_ENV", "Member", "is_fleet", "members", "names", "pick"]

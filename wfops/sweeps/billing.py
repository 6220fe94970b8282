"""What a sweep costs, client side: each pod's price per hour (a Lium pod's `lium ps` row; POD_PRICE_PER_HOUR for an
SSH host or `local`; else unknown), the `billing` block sweep.start sends each pod (price, SWEEP_BUDGET_USD or a
fleet pod's share of it), and the cost lines of sweep.status and sweep.report. The pod does the arithmetic
(wfops.agent.cost: each attempt's share of its pod's price, the idle rest, the budget), so it holds with no client.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from wfops.agent.wire import TYPE_CHECKING
from wfops.errors import UsageError

if TYPE_CHECKING:  # the wire's TypedDicts exist for the type checker only (the pod agent never imports typing);
    from typing import Any

    # Settings and the targets are imported where used: sweep.status's cached fast path (wfops.leancache) shows
    # `cost_line`/`usd` without the settings table
    from wfops.agent.wire import Billing
    from wfops.settings.load import Settings
    from wfops.targets.target import Member


def price_per_hour(settings: Settings, member: Member) -> float | None:
    """The pod's price in USD per hour: a Lium pod's from its `lium ps` row (the lookup its connection makes anyway,
    cached), else POD_PRICE_PER_HOUR (an SSH host, `local`, a Lium pod reached through its fallback host); None:
    unknown."""
    from wfops.targets import resolve
    from wfops.targets.target import LIUM

    if member.provider == LIUM:
        row = resolve.resolve(settings, member).row
        price = (row or {}).get("price_per_hour")
        if isinstance(price, (int, float)) and not isinstance(price, bool) and price >= 0:
            return float(price)
    return settings.pod_price_per_hour


def _refuse_unknown(settings: Settings, unknown: Sequence[str]) -> None:
    if unknown and settings.sweep_budget_usd is not None:
        raise UsageError(f"SWEEP_BUDGET_USD={settings.raw('SWEEP_BUDGET_USD')} needs each pod's price, and the price "
                         f"of {', '.join(unknown)} is unknown: set POD_PRICE_PER_HOUR (an SSH host or local), or "
                         "empty SWEEP_BUDGET_USD; nothing was started")


def billing(settings: Settings, member: Member) -> Billing:
    """The billing block of a one-pod sweep; UsageError (nothing started) for a budget with an unknown price."""
    price = price_per_hour(settings, member)
    _refuse_unknown(settings, [member.name] if price is None else [])
    return {"pod": member.name, "price_per_hour": price, "budget_usd": settings.sweep_budget_usd}


def fleet_billing(settings: Settings, members: Sequence[Member]) -> dict[str, Billing]:
    """Each fleet pod's billing block. The budget is split by price (a pod at twice the price gets twice the share),
    so every pod stops on its own, with no client watching, and the fleet's spend stays within SWEEP_BUDGET_USD."""
    prices = {m.name: price_per_hour(settings, m) for m in members}
    _refuse_unknown(settings, [n for n, p in prices.items() if p is None])
    budget, total = settings.sweep_budget_usd, sum(p or 0.0 for p in prices.values())
    out: dict[str, Billing] = {}
    for name, price in prices.items():
        share = None if budget is None else (budget * (price or 0.0) / total if total else budget / len(prices))
        out[name] = {"pod": name, "price_per_hour": price, "budget_usd": share}
    return out


def usd(value: object) -> str:
    """`$1.23` (`$0.0042` under a cent); '' when unknown."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return ""
    return f"${value:.4f}" if 0 < value < 0.01 else f"${value:.2f}"


def fleet_cost(costs: Mapping[str, Mapping[str, Any] | None]) -> dict[str, Any]:
    """The fleet's cost from each pod's (`cost` of its sweep-status answer): sums of what is known, and which pods'
    prices are unknown."""
    known = {n: c for n, c in costs.items() if c and c.get("price_per_hour") is not None}
    out: dict[str, Any] = {k: round(sum(float(c.get(k) or 0) for c in known.values()), 6) if known else None
                           for k in ("runs_usd", "idle_usd", "pod_usd")}
    earlier = [float(c["earlier_usd"]) for c in known.values() if c.get("earlier_usd") is not None]
    out["earlier_usd"] = round(sum(earlier), 6) if earlier else None
    out.update(pods=dict(costs), unknown=sorted(n for n in costs if n not in known),
               budget_usd=sum(float(c.get("budget_usd") or 0) for c in known.values()) or None)
    return out


def cost_line(cost: Mapping[str, Any] | None) -> str:
    """`cost: $1.20 in runs + $0.40 idle = $1.60 of pod time (budget $5)`; '' when no price is known. A managed
    sweep that replaced a lost pod: `..., $0.70 of it on lost pods` (counted in the budget too)."""
    if not cost or cost.get("pod_usd") is None:
        return ""
    rate = f" at {usd(cost['price_per_hour'])}/h" if cost.get("price_per_hour") is not None else ""
    if cost.get("earlier_usd") is not None:
        rate += f", {usd(cost['earlier_usd']) or '$0.00'} of it on lost pods"
    unknown = cost.get("unknown") or []
    budget = f" (budget {usd(cost['budget_usd'])})" if cost.get("budget_usd") is not None else ""
    return (f"cost: {usd(cost.get('runs_usd'))} in runs + {usd(cost.get('idle_usd'))} idle = {usd(cost['pod_usd'])} "
            f"of pod time{rate}{budget}" + (f"; price unknown for {', '.join(unknown)}" if unknown else ""))

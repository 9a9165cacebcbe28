"""What a route's candidate (fine-tuned) target saves against its baseline: a pure function of
the targets' token sums (storage.savings), the prices, and the jobs that trained them.

Per target: requests, prompt and completion tokens per request, cost per request (None: "no
price", never 0). Per target other than the baseline: tokens and USD saved per request (the
baseline's per-request figures minus its own), per day at the traffic it served, and per day
were it to serve all the alias's traffic; and break-even: the training cost over the saving per
request, "never" when the saving is not positive, and in days at the alias's WHOLE traffic (its
requests per live day, every target together): what the model will get once promoted fully. A
10% canary started an hour ago would otherwise look ten times slower to pay off (and, with its
hour counted as a day, 24 times slower again).

"Per day" is per LIVE day: from the target's first to its last request in the window (the
alias's, for "all the alias's traffic"), at least `MIN_LIVE_DAYS` (a few minutes of traffic
are not extrapolated to a day) and at most the window. A canary started yesterday in a 30-day
window saves per day what it saved in its day, not 1/30 of it. Prompt tokens read from the
provider's cache are priced at the cached rate (proxy.pricing).

The baseline is the one given, else the route's first target when it has several (a
promotion puts the stable target first), else its first fallback (the previous model after a
full promotion), else its only target.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from proxy.pricing import Price, PriceMap

USD_DIGITS = 8
MIN_LIVE_DAYS = 1.0
DAY_S = 86_400


@dataclass(frozen=True, slots=True)
class Totals:
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    first_at: str | None = None
    last_at: str | None = None

    @property
    def tokens_per_request(self) -> float:
        return (self.prompt_tokens + self.completion_tokens) / self.requests

    def cost_per_request(self, price: Price | None) -> float | None:
        if price is None:
            return None
        return price.cost(self.prompt_tokens, self.completion_tokens,
                          self.cached_tokens) / self.requests


def live_days(first_at: str | None, last_at: str | None, window_days: int) -> float:
    """Days from the first to the last request, within [MIN_LIVE_DAYS, window_days]."""
    if first_at is None or last_at is None:
        return float(window_days)
    span = (datetime.fromisoformat(last_at) - datetime.fromisoformat(first_at)).total_seconds()
    return min(float(window_days), max(MIN_LIVE_DAYS, span / DAY_S))


def _span(rows: Iterable[Mapping[str, Any]]) -> tuple[str | None, str | None]:
    firsts = [r["first_at"] for r in rows if r.get("first_at")]
    lasts = [r["last_at"] for r in rows if r.get("last_at")]
    return (min(firsts, key=datetime.fromisoformat) if firsts else None,
            max(lasts, key=datetime.fromisoformat) if lasts else None)


def default_baseline(spec: Mapping[str, Any] | None) -> str | None:
    if not spec:
        return None
    targets = spec.get("targets") or []
    fallbacks = spec.get("fallbacks") or []
    if len(targets) > 1:
        return str(targets[0]["model"])
    if fallbacks:
        return str(fallbacks[0]["model"])
    return str(targets[0]["model"]) if targets else None


def _roles(spec: Mapping[str, Any] | None) -> dict[str, str]:
    roles: dict[str, str] = {}
    for target in (spec or {}).get("targets") or []:
        roles.setdefault(str(target["model"]), "target")
    for target in (spec or {}).get("fallbacks") or []:
        roles.setdefault(str(target["model"]), "fallback")
    return roles


def _usd(value: float | None) -> float | None:
    return None if value is None else round(value, USD_DIGITS)


def _no_price(model: str) -> str:
    return f"no price for {model} (add it to the settings' [prices] table)"


def training_cost(training: Mapping[str, Any] | None, prices: PriceMap) -> float | None:
    """The settings' training price for the job's base model times its trained tokens, else
    the cost recorded with the job (the exporter's price table)."""
    if not training:
        return None
    tokens = training.get("trained_tokens")
    per_token = prices.training_price(training.get("base_model"))
    if tokens is not None and per_token is not None:
        return float(tokens * per_token)
    cost = training.get("training_cost_usd")
    return None if cost is None else float(cost)


def _break_even(saved: float | None, requests_per_day: float, cost: float | None,
                why_not: str | None) -> dict[str, Any]:
    """Requests to pay the training cost back, and days at `requests_per_day` (the alias's
    whole traffic)."""
    if saved is None:
        return {"break_even": why_not or "no saving known", "break_even_requests": None,
                "break_even_days": None}
    if saved <= 0:
        return {"break_even": "never", "break_even_requests": None, "break_even_days": None}
    if cost is None:
        return {"break_even": "no training cost known", "break_even_requests": None,
                "break_even_days": None}
    requests = math.ceil(cost / saved - 1e-9)
    days = cost / (saved * requests_per_day) if requests_per_day > 0 else None
    text = f"after {requests:,} requests" + ("" if days is None else (
        f" (~{days:,.1f} days at the alias's whole traffic, "
        f"{requests_per_day:,.1f} requests a day)"))
    return {"break_even": text, "break_even_requests": requests,
            "break_even_days": None if days is None else round(days, 3)}


def savings_report(alias: str, spec: Mapping[str, Any] | None,
                   usage: Sequence[Mapping[str, Any]], prices: PriceMap,
                   training: Mapping[str, Mapping[str, Any]], *, days: int,
                   baseline: str | None = None) -> dict[str, Any]:
    """The savings of one alias from its usage rows (storage.savings.target_usage)."""
    sums: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    rows_of: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in usage:
        acc = sums[row["target"]]
        acc[0] += row["requests"]
        acc[1] += row["prompt_tokens"]
        acc[2] += row["completion_tokens"]
        acc[3] += row.get("cached_tokens", 0)
        rows_of[row["target"]].append(row)
    totals = {target: Totals(acc[0], acc[1], acc[2], acc[3], *_span(rows_of[target]))
              for target, acc in sums.items() if acc[0] > 0}
    base = baseline or default_baseline(spec)
    roles = _roles(spec)
    all_requests = sum(t.requests for t in totals.values())
    alias_days = live_days(*_span(usage), days)
    report: dict[str, Any] = {"alias": alias, "days": days, "live_days": round(alias_days, 3),
                              "requests_per_day": round(all_requests / alias_days, 3),
                              "baseline": base,
                              "route": dict(spec) if spec else None, "targets": [],
                              "daily": [], "message": None}
    if not totals:
        report["message"] = (f"no production traffic with token usage through {alias!r} in "
                             f"the last {days} days" + ("" if spec else
                                                         f" ({alias!r} has no route)"))
        return report
    if base is not None and base not in totals:
        report["message"] = (f"the baseline {base} served no request in the last {days} days: "
                             "nothing to compare with")
    price_of = {target: prices.lookup(target) for target in totals}
    base_totals = totals.get(base) if base is not None else None
    base_cpr = base_totals.cost_per_request(price_of[base]) if base_totals and base else None
    for target in sorted(totals, key=lambda t: (t != base, t)):
        report["targets"].append(_target_row(
            target, totals[target], price_of[target], roles.get(target, "not_in_route"),
            base, base_totals, base_cpr, price_of.get(base or ""), prices,
            training.get(target), days, all_requests / alias_days))
    report["daily"] = _daily(usage, price_of, base, base_cpr)
    return report


def _target_row(target: str, mine: Totals, price: Price | None, role: str, base: str | None,
                base_totals: Totals | None, base_cpr: float | None, base_price: Price | None,
                prices: PriceMap, training: Mapping[str, Any] | None, days: int,
                alias_requests_per_day: float) -> dict[str, Any]:
    cpr = mine.cost_per_request(price)
    live = live_days(mine.first_at, mine.last_at, days)
    row: dict[str, Any] = {
        "target": target, "role": "baseline" if target == base else role,
        "requests": mine.requests, "cached_tokens_per_request":
            round(mine.cached_tokens / mine.requests, 3),
        "first_request_at": mine.first_at, "last_request_at": mine.last_at,
        "live_days": round(live, 3),
        "prompt_tokens_per_request": round(mine.prompt_tokens / mine.requests, 3),
        "completion_tokens_per_request": round(mine.completion_tokens / mine.requests, 3),
        "cost_per_request_usd": _usd(cpr),
        "price": None if price is None else price.to_json(),
        "note": None if price is not None else _no_price(target),
    }
    if target == base or base_totals is None:
        return row
    saved_tokens = base_totals.tokens_per_request - mine.tokens_per_request
    saved = None if cpr is None or base_cpr is None else base_cpr - cpr
    why_not = _no_price(target) if cpr is None else (
        _no_price(base or "") if base_price is None else None)
    per_day = None if saved is None else saved * mine.requests / live
    cost = training_cost(training, prices)
    row |= {
        "saved_tokens_per_request": round(saved_tokens, 3),
        "saved_usd_per_request": _usd(saved),
        "saved_tokens_per_day": round(saved_tokens * mine.requests / live, 3),
        "saved_usd_per_day": _usd(per_day),
        "saved_usd_per_day_at_full_traffic": _usd(
            None if saved is None else saved * alias_requests_per_day),
        "training": None if training is None else {**training, "cost_usd": _usd(cost)},
        **_break_even(saved, alias_requests_per_day, cost, why_not),
    }
    if why_not:
        row["note"] = why_not
    return row


def _daily(usage: Sequence[Mapping[str, Any]], price_of: Mapping[str, Price | None],
           base: str | None, base_cpr: float | None) -> list[dict[str, Any]]:
    """Per day and target: requests, tokens and cost per request, and (other targets) USD saved
    that day against the baseline's cost per request over the window."""
    daily = []
    for row in usage:
        if row["day"] is None or row["requests"] <= 0:
            continue
        price = price_of.get(row["target"])
        cost = None if price is None else price.cost(
            row["prompt_tokens"], row["completion_tokens"], row.get("cached_tokens", 0))
        saved = None
        if row["target"] != base and cost is not None and base_cpr is not None:
            saved = base_cpr * row["requests"] - cost
        daily.append({
            "day": row["day"], "target": row["target"], "requests": row["requests"],
            "tokens_per_request": round(
                (row["prompt_tokens"] + row["completion_tokens"]) / row["requests"], 3),
            "cost_per_request_usd": _usd(None if cost is None else cost / row["requests"]),
            "saved_usd": _usd(saved)})
    return daily

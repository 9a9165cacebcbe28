"""Two threats to the canary's error test, old against new (run by bench/canary_sprt.py).

*Old*: every request is an independent trial and a sticky user's target is an unkeyed hash of
alias and user id, so anyone can compute which ids land on the canary. *New*: the draw is keyed
with a server secret (proxy/routing.py), a key sending more than 10% of the recent traffic is
drawn per request, and a sticky user's requests weigh at most `max_requests_per_user` per
target (storage/route_health.py).

- Clustered users: an even canary (the model errs alike on both arms), users differing in
  volume (Pareto 1.2) and in how often their requests err (5% of users 15%, the rest 1%),
  each user sticky to one arm; the test looked at every 50 canary requests, stopped at the
  first decision. How often the even canary is rolled back (should be at most alpha), and
  how often a canary 5 points worse is.
- Dilution: 2,000 honest requests (no user id, drawn per request, 10% share) on a canary
  failing 20% against 1%; the attacker adds B cheap successful requests. Old: all of them on
  canary-bound user ids worked out offline. New: it cannot know an id's arm before using it;
  its best play sends a fresh id per request (each probe counts on whichever arm it lands)
  and, when the answer shows it reached the canary, `max_requests_per_user - 1` more on that
  id. The share of runs whose verdict is `promote` after all the traffic.
"""

from __future__ import annotations

import random
from collections import defaultdict

from exporter.canary_stats import SprtParams, sprt

SHARE = 0.1
CAP = 5  # [canary] max_requests_per_user
HOT = 0.1  # proxy/hot_keys.py HOT_SHARE


class _Arm:
    """One arm's requests per key, and their totals weighed at most CAP per key."""

    def __init__(self) -> None:
        self.cells: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        self.n = self.x = 0.0

    @staticmethod
    def _part(count: int, errors: int) -> tuple[float, float]:
        weight = min(1.0, CAP / count) if count else 0.0
        return count * weight, errors * weight

    def add(self, key: str, error: bool) -> None:
        cell = self.cells[key]
        before = self._part(*cell)
        cell[0], cell[1] = cell[0] + 1, cell[1] + error
        after = self._part(*cell)
        self.n += after[0] - before[0]
        self.x += after[1] - before[1]


def clustered(seed: int, users: int, params: SprtParams, *, new: bool, worse: float = 0.0,
              total: int = 20_000, every: int = 50) -> str:
    rng = random.Random(seed)
    volume = [rng.paretovariate(1.2) for _ in range(users)]
    err = [0.15 if rng.random() < 0.05 else 0.01 for _ in range(users)]
    on_canary = [rng.random() < SHARE for _ in range(users)]
    weights = [v / sum(volume) for v in volume]
    hot = [new and w > HOT for w in weights]
    arms = (_Arm(), _Arm())
    seen = 0
    for n, user in enumerate(rng.choices(range(users), weights, k=total)):
        canary = rng.random() < SHARE if hot[user] else on_canary[user]
        key = f"r{n}" if hot[user] or not new else f"u{user}"  # old: every request a trial
        arms[0 if canary else 1].add(key, rng.random() < err[user] + (worse if canary else 0))
        if canary:
            seen += 1
            if seen % every == 0:
                canary_arm, base = arms
                decision = sprt("errors", canary_arm.n, canary_arm.x, base.n, base.x,
                                params).decision
                if decision == "worse":
                    return "rollback"
                if decision == "not_worse" and seen >= 100:
                    return "promote"
    return "continue"


def diluted(seed: int, budget: int, params: SprtParams, *, new: bool,
            honest: int = 2_000) -> str:
    rng = random.Random(seed)
    nc = xc = nb = xb = 0.0
    for _ in range(honest):
        if rng.random() < SHARE:
            nc, xc = nc + 1, xc + (rng.random() < 0.20)
        else:
            nb, xb = nb + 1, xb + (rng.random() < 0.01)
    left = budget
    if not new:
        nc += left  # canary-bound ids computed offline, every request counted
    while new and left > 0:
        left -= 1  # a fresh id: lands where the keyed draw puts it
        if rng.random() < SHARE:
            more = min(CAP - 1, left)
            nc, left = nc + 1 + more, left - more
        else:
            nb += 1
    decision = sprt("errors", nc, xc, nb, xb, params).decision
    return {"worse": "rollback", "not_worse": "promote"}[decision] \
        if decision != "continue" else "continue"


def print_threats(params: SprtParams, *, runs: int) -> None:
    print(f"clustered users, {SHARE:.0%} share, a look every 50 canary requests "
          f"(old: each request a trial; new: <= {CAP} per user per target, hot keys per "
          f"request), {runs} runs:")
    for users in (20, 50, 200):
        row = []
        for new in (False, True):
            even = [clustered(s, users, params, new=new) for s in range(runs)]
            bad = [clustered(s, users, params, new=new, worse=0.05) for s in range(runs)]
            row.append((even.count("rollback") / runs, bad.count("rollback") / runs,
                        bad.count("promote") / runs))
        (eo, bo, po), (en, bn, pn) = row
        print(f"  {users:4d} users: even canary rolled back old {100 * eo:5.1f}% new "
              f"{100 * en:5.1f}% (alpha {100 * 2 * params.alpha:g}%, this test "
              f"{100 * params.alpha:g}%); +5 points rolled back old {100 * bo:5.1f}% new "
              f"{100 * bn:5.1f}%, promoted old {100 * po:4.1f}% new {100 * pn:4.1f}%")
    print(f"dilution of a canary failing 20% vs 1% (2,000 honest requests, {SHARE:.0%} share), "
          f"{runs} runs: promoted")
    for budget in (0, 1_000, 2_000, 5_000, 10_000):
        old = [diluted(s, budget, params, new=False) for s in range(runs)].count("promote")
        new = [diluted(s, budget, params, new=True) for s in range(runs)].count("promote")
        print(f"  attacker +{budget:6d} requests: old {100 * old / runs:5.1f}% new "
              f"{100 * new / runs:5.1f}%")

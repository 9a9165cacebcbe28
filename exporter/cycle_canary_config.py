"""The cycle config's `[canary]` section (exporter/cycle_config.py): the canary's share, its
sequential test's risks and effect sizes, and how long it may take, with the limits that keep
each setting one that can decide."""

from __future__ import annotations

import math
from typing import Any

from pydantic import Field, model_validator

from exporter.config_section import StrictSection
from tuneloop.config import MAX_CANARY_SHARE

MAX_HOURS = 24 * 30
"""max_hours, history_hours: a canary open (or a history) longer than 30 days is a mistake."""
MAX_MIN_REQUESTS = 1_000_000
MAX_MIN_FEEDBACK = 100_000
"""Hard caps: a canary needing more could never be promoted before max_hours on any real
alias; it would always expire and be rolled back."""


_REPLACED_CANARY_KEYS = {
    # it was the increase beyond which a canary was rolled back; the sequential test's
    # tolerated increase is another thing, so the old name is refused rather than reused
    "max_error_rate_increase": "it was the error-rate increase beyond which the canary was "
                               "rolled back; the canary's errors are now judged by a sequential "
                               "test: set bad_error_rate_increase (rolled back) and "
                               "tolerated_error_rate_increase (tolerated) instead",
    "max_thumbs_down_increase": "renamed tolerated_thumbs_down_increase",
    "max_feedback_drop": "the canary's feedback is now judged by a sequential test on the share "
                         "of thumbs-down answers: set tolerated_thumbs_down_increase "
                         "(tolerated) and bad_thumbs_down_increase (rolled back) instead",
}


MIN_CANARY_PERCENT = 1.0
MAX_CANARY_PERCENT = MAX_CANARY_SHARE


def canary_share_problem(percent: float) -> str | None:
    """Why a canary share is no canary, or None: 100% is a full promotion with no test;
    below MIN_CANARY_PERCENT the canary sees too few requests for its test ever to decide."""
    if not math.isfinite(percent):
        return (f"percent = {percent:g} is no canary share: give a number from "
                f"{MIN_CANARY_PERCENT:g} to {MAX_CANARY_PERCENT:g}")
    if percent >= 100:
        return (f"percent = {percent:g} is not a canary: the candidate would take all the "
                "traffic at once, untested")
    if percent > MAX_CANARY_PERCENT:
        return (f"percent = {percent:g} is too large a canary: the current model must keep "
                f"at least {100 - MAX_CANARY_PERCENT:g}% of the traffic for the test to compare "
                f"the canary with; use at most {MAX_CANARY_PERCENT:g}")
    if percent < MIN_CANARY_PERCENT:
        return (f"percent = {percent:g} is too small a canary: it would see fewer than 1 "
                f"request in {100 / MIN_CANARY_PERCENT:g} and its test might never decide; "
                f"use at least {MIN_CANARY_PERCENT:g}")
    return None


class CanaryConfig(StrictSection):
    percent: float = Field(10.0, gt=0, le=100)
    alpha: float = Field(0.05, gt=0, lt=0.5)
    beta: float = Field(0.2, gt=0, lt=0.5)
    tolerated_error_rate_increase: float = Field(0.01, ge=0, lt=1)
    bad_error_rate_increase: float = Field(0.05, gt=0, le=1)
    tolerated_thumbs_down_increase: float = Field(0.05, ge=0, lt=1)
    bad_thumbs_down_increase: float = Field(0.2, gt=0, le=1)
    min_feedback: int = Field(10, ge=1, le=MAX_MIN_FEEDBACK)
    """The thumbs-down test counts only once the canary has this many votes."""
    max_votes_per_voter: int = Field(5, ge=1, le=1_000_000)
    """One voter (the API key that sent the feedback) weighs at most this many votes per
    target in the thumbs-down test (storage/route_health.py)."""
    max_requests_per_user: int = Field(5, ge=1, le=1_000_000)
    """One sticky user (or session) weighs at most this many requests per target in the
    errors test (storage/route_health.py): its requests are a cluster, not independent."""
    min_requests: int = Field(100, ge=1, le=MAX_MIN_REQUESTS)
    """Canary requests a promotion needs; a rollback does not wait for them."""
    min_age_minutes: float = Field(0.0, ge=0)
    watch_seconds: float = Field(10.0, ge=1, le=3600)
    """With `cycle --every`: how often an open canary is evaluated between scheduled runs."""
    max_hours: float = Field(24.0, gt=0, le=MAX_HOURS)
    """A canary still undecided this long after its promotion is rolled back (the safe side)."""
    history_hours: float = Field(24.0, ge=0, le=MAX_HOURS)
    """When the current target gets too little traffic beside the canary (a sticky key sending
    everything to the canary), its traffic in this many hours before the promotion is the
    baseline instead (0: never)."""

    @model_validator(mode="before")
    @classmethod
    def _replaced_keys(cls, data: Any) -> Any:
        # a setting that once guarded production must not be dropped in silence, nor refused
        # as a mere typo: say what replaced it
        if isinstance(data, dict):
            for key, instead in _REPLACED_CANARY_KEYS.items():
                if key in data:
                    raise ValueError(f"{key} is no longer used: {instead}")
        return data

    @model_validator(mode="after")
    def _a_real_canary(self) -> CanaryConfig:
        problem = canary_share_problem(self.percent)
        if problem is not None:
            raise ValueError(problem + " (to give a model all the traffic, promote it "
                                       "yourself: `tuneloop promote` without --canary)")
        return self

    @model_validator(mode="after")
    def _effects_ordered(self) -> CanaryConfig:
        for metric in ("error_rate", "thumbs_down"):
            tolerated = getattr(self, f"tolerated_{metric}_increase")
            bad = getattr(self, f"bad_{metric}_increase")
            if bad <= tolerated:
                raise ValueError(f"bad_{metric}_increase ({bad}) must be above "
                                 f"tolerated_{metric}_increase ({tolerated})")
        if self.min_age_minutes >= 60 * self.max_hours:
            raise ValueError(f"min_age_minutes ({self.min_age_minutes:g}) must be below max_hours "
                             f"({self.max_hours:g}) in minutes: the canary could never be promoted")
        return self

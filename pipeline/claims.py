"""The write-ups' claims beside what the runs measured, each with its test and a verdict.

Each study's plug-in (pipeline/studies) turns the study's summary rows (and per-iteration
diagnostics) into Claim rows with the tests below. A verdict is never forced:

* consistent: the 95% interval over seeds lies entirely on the claim's side;
* inconsistent: it lies entirely on the other side;
* cannot tell at this scale: the interval straddles the line, there is one seed, or the study
  did not run what the claim is about.

Intervals are Student-t intervals of the mean over seeds; differences between two variants use
Welch's interval and test (stats.welch). Thresholds that turn a write-up's words into a line
("works", "about half", "barely differs") are stated in each claim's `test` column.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.stats import fmt_ci, mean_ci, welch

CONSISTENT, INCONSISTENT, CANNOT_TELL = "consistent", "inconsistent", "cannot tell at this scale"
PASS, FAIL = "pass", "FAIL"
SIMILAR = 0.10       # "barely differs": the difference is within 10% of the two means' average


@dataclass(frozen=True)
class Claim:
    source: str      # who claims it: a write-up, or "control"
    claim: str       # in the source's terms
    measured: str    # our estimate with its 95% interval over seeds
    test: str        # how the verdict was reached
    verdict: str


def interval_side(values, low: float = -math.inf, high: float = math.inf) -> tuple[str, str]:
    """Mean [95% t-interval] of `values` and whether the interval lies inside [low, high]
    (consistent), entirely outside it (inconsistent), or across an edge (cannot tell)."""
    mean, lo, hi = mean_ci(values)
    if math.isnan(lo):
        return fmt_ci(mean, lo, hi) + " (1 seed)", CANNOT_TELL
    if low <= lo and hi <= high:
        return fmt_ci(mean, lo, hi), CONSISTENT
    if hi < low or lo > high:
        return fmt_ci(mean, lo, hi), INCONSISTENT
    return fmt_ci(mean, lo, hi), CANNOT_TELL


def difference(a, b, claimed: str) -> tuple[str, str]:
    """a - b with Welch's interval and p; `claimed` is 'higher' (a > b) or 'lower' (a < b).
    Consistent when the interval excludes 0 on the claimed side, inconsistent on the other."""
    diff, lo, hi, p = welch(a, b)
    if math.isnan(lo):
        return f"{diff:.3g} (1 seed: no test)", CANNOT_TELL
    text = f"{diff:.3g} [{lo:.3g}, {hi:.3g}], Welch p = {p:.2g}"
    above, below = lo > 0, hi < 0
    if (claimed == "higher" and above) or (claimed == "lower" and below):
        return text, CONSISTENT
    if (claimed == "higher" and below) or (claimed == "lower" and above):
        return text, INCONSISTENT
    return text, CANNOT_TELL


def equivalent(a, b) -> tuple[str, str]:
    """'barely differs': consistent when Welch's 95% interval of a - b lies within +-SIMILAR of
    the two means' average, inconsistent when it lies entirely beyond that margin."""
    diff, lo, hi, p = welch(a, b)
    margin = SIMILAR * (np.mean(a) + np.mean(b)) / 2
    if math.isnan(lo):
        return f"{diff:.3g} (1 seed: no test)", CANNOT_TELL
    text = f"{diff:.3g} [{lo:.3g}, {hi:.3g}] (margin +-{margin:.3g}), Welch p = {p:.2g}"
    if -margin <= lo and hi <= margin:
        return text, CONSISTENT
    if lo > margin or hi < -margin:
        return text, INCONSISTENT
    return text, CANNOT_TELL


def claims_table(claims: list[Claim]) -> pd.DataFrame:
    """The claims section's table: one row per claim, the columns in Claim's order."""
    return pd.DataFrame([vars(c) for c in claims], columns=["source", "claim", "measured", "test", "verdict"])

"""Statistics over seeds shared by the report and the claims: Student-t intervals of a mean,
Welch's interval and test for a difference, the headline metric of a summary, and a per-run
spike score of G's loss."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from pipeline.extractors import quoted_first

DATA = "data_label"  # how tables and plots name the data: the dataset, and what it stands in for


def mean_ci(values) -> tuple[float, float, float]:
    """Mean and 95% Student-t interval; a single value has no interval (nan)."""
    v = np.asarray(values, dtype=float)
    mean = float(v.mean())
    if len(v) < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return mean, mean - half, mean + half


def t_errorbar(values) -> tuple[float, float]:
    """seaborn errorbar: the same 95% t-interval as the tables (a bootstrap over 2 seeds is just
    their range, far narrower than what 2 seeds can tell)."""
    _, lo, hi = mean_ci(values)
    return lo, hi


def fmt_ci(mean: float, lo: float, hi: float) -> str:
    return f"{mean:.3g}" if math.isnan(lo) else f"{mean:.3g} [{lo:.3g}, {hi:.3g}]"


def welch(a, b) -> tuple[float, float, float, float]:
    """mean(a) - mean(b), its 95% Welch interval and the two-sided p-value (nan with < 2 per side)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return diff, math.nan, math.nan, math.nan
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return diff, diff, diff, (1.0 if diff == 0 else 0.0)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = float(stats.t.ppf(0.975, df) * se)
    p = float(2 * stats.t.sf(abs(diff) / se, df))
    return diff, diff - half, diff + half, p


def headline_metric(summary: pd.DataFrame, kind: str) -> str | None:
    """The IS / FID column to quote: inception when measured, else effnet, else the classifier's."""
    for extractor in quoted_first():
        column = f"{kind}_{extractor}"
        if column in summary and summary[column].notna().all():
            return column
    return None


MIN_SPIKE_ROWS = 10  # fewer logged iterations than this: no spike score (a median of 3 says nothing)


def loss_spikes(steps: pd.DataFrame) -> pd.Series:
    """Per run: how far G's loss jumps above its typical level, max / median of |loss_g - median|
    over the logged iterations (robust: one number per run, large for spiky runs); NaN for runs
    with fewer than MIN_SPIKE_ROWS logged iterations."""
    def score(g):
        if len(g) < MIN_SPIKE_ROWS:
            return math.nan
        dev = (g["loss_g"] - g["loss_g"].median()).abs()
        return float(dev.max() / max(dev.median(), 1e-12))

    return steps.groupby("experiment").apply(score, include_groups=False)

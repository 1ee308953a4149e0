"""Statistics over seeds shared by the report and the claims: Student-t intervals of a mean,
Welch's interval and test for a difference, the tests a claim's verdict rests on (a line or a band,
TOST for a band), Holm's adjustment over a page's tests, the seeds a test would need, the headline
metric of a summary, and a per-run spike score of G's loss."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from pipeline.core.extractors import quoted_first

DATA = "data_label"  # how tables and plots name the data: the dataset, and what it stands in for


def mean_ci(values) -> tuple[float, float, float]:
    """Mean and 95% Student-t interval; a single value has no interval (nan)."""
    spread = Spread.of(values)
    if spread.one_seed:
        return spread.estimate, math.nan, math.nan
    return (spread.estimate, *spread.interval(0.95))


def sd(values) -> float:
    """Sample standard deviation, exactly 0 for identical values (numpy leaves ~1e-17 from the
    mean's rounding, which would pass for a spread)."""
    v = np.asarray(values, dtype=float)
    return 0.0 if np.ptp(v) == 0 else float(v.std(ddof=1))


def t_errorbar(values) -> tuple[float, float]:
    """seaborn errorbar: the same 95% t-interval as the tables (a bootstrap over 2 seeds is just
    their range, far narrower than what 2 seeds can tell)."""
    _, lo, hi = mean_ci(values)
    return lo, hi


ALL_SAME = "all seeds identical"  # no spread over seeds: no interval, no test (never p = 0)


def fmt_ci(mean: float, lo: float, hi: float) -> str:
    """'mean [lo, hi]'; a zero-width interval is no interval: the seeds were all the same."""
    if math.isnan(lo):
        return f"{mean:.3g}"
    if lo == hi:
        return f"{mean:.3g} ({ALL_SAME})"
    return f"{mean:.3g} [{lo:.3g}, {hi:.3g}]"


def welch(a, b) -> tuple[float, float, float, float]:
    """mean(a) - mean(b), its 95% Welch interval and the two-sided p-value; nan with < 2 per side,
    and nan when both sides' seeds are each all identical (no spread: a t-test has nothing to scale by)."""
    spread = Spread.of(a, b)
    if spread.one_seed or spread.all_same:
        return spread.estimate, math.nan, math.nan, math.nan
    p = float(2 * stats.t.sf(abs(spread.estimate) / spread.se(), spread.df()))
    return (spread.estimate, *spread.interval(0.95), p)


ALPHA = 0.05         # every verdict's level, after Holm's adjustment over the page's tests
POWER = 0.8          # "seeds needed": the seeds at which a test would reach its verdict this often
MAX_SEEDS = 1000     # beyond this, "seeds needed" says "more than"


def holm(pvalues) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the order given: the k-th smallest of m times
    (m - k + 1), made non-decreasing, capped at 1. A page's verdicts then share one alpha without
    assuming its tests independent."""
    p = [float(v) for v in pvalues]
    m, running, out = len(p), 0.0, [math.nan] * len(p)
    for rank, i in enumerate(sorted(range(m), key=lambda j: p[j])):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


@dataclass(frozen=True)
class Spread:
    """A mean over seeds (one group) or a difference of two groups' means, with each group's
    standard deviation and size: what a t-test needs, and what it needs to be re-run at n seeds."""
    estimate: float
    sds: tuple[float, ...]
    ns: tuple[int, ...]

    @classmethod
    def of(cls, *groups) -> "Spread":
        """One group: its mean; two: mean(first) - mean(second)."""
        values = [np.asarray(g, dtype=float) for g in groups]
        means = [float(v.mean()) for v in values]
        estimate = means[0] if len(values) == 1 else means[0] - means[1]
        return cls(estimate, tuple(sd(v) if len(v) > 1 else math.nan for v in values),
                   tuple(len(v) for v in values))

    def _ns(self, n: int | None) -> tuple[int, ...]:
        return self.ns if n is None else (n,) * len(self.ns)

    def se(self, n: int | None = None) -> float:
        """Standard error with the observed sizes, or with n seeds per group."""
        return math.sqrt(sum(s * s / k for s, k in zip(self.sds, self._ns(n))))

    def df(self, n: int | None = None) -> float:
        """n - 1 for one group; Welch-Satterthwaite for two."""
        ns = self._ns(n)
        if len(ns) == 1:
            return ns[0] - 1
        v = [s * s / k for s, k in zip(self.sds, ns)]
        return sum(v) ** 2 / sum(vi * vi / (k - 1) for vi, k in zip(v, ns))

    @property
    def one_seed(self) -> bool:
        return min(self.ns) < 2

    @property
    def all_same(self) -> bool:
        return not self.one_seed and self.se() == 0

    def interval(self, level: float) -> tuple[float, float]:
        """Student-t (Welch for two groups) interval of the estimate at `level` (0.95: 95%)."""
        half = float(stats.t.ppf(0.5 + level / 2, self.df()) * self.se())
        return self.estimate - half, self.estimate + half


def band_p(spread: Spread, low: float, high: float) -> tuple[float, float]:
    """(p for, p against) the claim that the true value lies in [low, high]. With one infinite
    edge (a line): the two-sided t-test against the other, credited to the side the estimate is on
    (p < 0.05 iff the 95% interval excludes the line). A band: for, TOST (the larger of the two
    one-sided p, < 0.05 iff the 90% interval lies inside); against, the two-sided test against
    the nearer edge (< 0.05 iff the 95% interval lies beyond it)."""
    se, df, est = spread.se(), spread.df(), spread.estimate
    if math.isinf(low) or math.isinf(high):
        line = high if math.isinf(low) else low
        if est == line:
            return 1.0, 1.0
        p = float(2 * stats.t.sf(abs(est - line) / se, df))
        return (p, 1.0) if low <= est <= high else (1.0, p)
    t_low, t_high = (est - low) / se, (est - high) / se
    p_for = max(float(stats.t.sf(t_low, df)), float(stats.t.cdf(t_high, df)))
    p_against = min(1.0, 2 * min(float(stats.t.cdf(t_low, df)), float(stats.t.sf(t_high, df))))
    return p_for, p_against


def _two_sided_power(effect: float, se: float, df: float, alpha: float) -> float:
    """Noncentral t: the chance a two-sided t-test at alpha rejects when the truth is `effect`."""
    crit, ncp = stats.t.ppf(1 - alpha / 2, df), abs(effect) / se
    return float(stats.nct.sf(crit, df, ncp) + stats.nct.cdf(-crit, df, ncp))


def _tost_power(spread: Spread, low: float, high: float, n: int, alpha: float) -> float:
    """Lower bound P(A) + P(B) - 1 on the chance both one-sided tests reject (noncentral t each),
    the truth being the observed estimate."""
    se, df = spread.se(n), spread.df(n)
    crit = stats.t.ppf(1 - alpha, df)
    above_low = stats.nct.sf(crit, df, (spread.estimate - low) / se)
    below_high = stats.nct.cdf(-crit, df, (spread.estimate - high) / se)
    return float(above_low + below_high - 1)


def seeds_needed(spread: Spread, low: float, high: float, alpha: float = ALPHA, power: float = POWER) -> int | None:
    """Seeds per group at which band_p's test would decide with probability `power` at `alpha`,
    were the observed estimate and standard deviations the truth: inside a band, TOST (its power's
    lower bound); otherwise the two-sided t-test against the nearest edge (noncentral t). None: not
    within MAX_SEEDS, or never (the estimate on an edge)."""
    est = spread.estimate
    if not math.isinf(low) and not math.isinf(high) and low < est < high:
        def power_at(n):
            return _tost_power(spread, low, high, n, alpha)
    else:
        edges = [e for e in (low, high) if not math.isinf(e)]
        effect = min((est - e for e in edges), key=abs)
        if effect == 0:
            return None

        def power_at(n):
            return _two_sided_power(effect, spread.se(n), spread.df(n), alpha)
    if power_at(MAX_SEEDS) < power:
        return None
    lo, hi = 2, MAX_SEEDS  # power grows with n: the smallest n with enough, by bisection
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if power_at(mid) >= power else (mid + 1, hi)
    return lo


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

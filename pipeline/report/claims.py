"""The write-ups' claims beside what the runs measured, each with its setting, test and verdict.

Each study's plug-in (pipeline/report/studies) declares where each claim was seen (a Setting, next to
the claim) and turns the study's summary rows into Claim rows. A claim is judged only on runs in
its setting; the others show their numbers as an extension. Every claim is "the true value lies in
[low, high]" for some estimate over seeds (a mean, or a difference of two means); a line has one
infinite edge, a band two (stats.band_p). Verdicts, at ALPHA on the p-value Holm-adjusted over
the page's tests (claims_table; a plug-in alone decides on its raw p):

* consistent / inconsistent: the claim's test rejects on the claim's / on the other side;
* underpowered: neither; with the seeds per group that would confirm (estimate on the claim's
  side) or refute it with 80% power at alpha / m, were the estimate and spread the truth (m: the
  page's tests; below alpha / m Holm rejects whatever the other p-values);
* all seeds identical / one seed: no spread to test against, so no test and no p;
* extension: runs outside the claim's setting, their numbers without a verdict;
* not run / no verdict (with why): nothing in the setting to measure;
* pass / FAIL: the controls, every seed against a threshold.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

import pandas as pd

from pipeline.report.stats import ALL_SAME, ALPHA, MAX_SEEDS, POWER, Spread, band_p, holm, seeds_needed

CONSISTENT, INCONSISTENT, UNDERPOWERED = "consistent", "inconsistent", "underpowered"
ONE_SEED = "one seed: no test"
EXTENSION = "extension: no verdict against the write-up"
NOT_RUN = "not run at this scale"
NO_VERDICT = "no verdict"
PASS, FAIL = "pass", "FAIL"
SIMILAR = 0.10  # "barely differs": the TOST margin, +-10% of the two means' average (the rule set before the runs)
INF = math.inf


@dataclass(frozen=True)
class Setting:
    """Where a source saw its claim: the runs that match every non-empty field are judged, the
    others are an extension. `data` names what the runs' data is or stands in for, by the start of
    its name (punctuation and case ignored: 'CIFAR-10' matches cifar10 and 'CIFAR-10')."""
    text: str
    model: tuple[str, ...] = ()
    loss: tuple[str, ...] = ()
    data: tuple[str, ...] = ()
    num_classes: tuple[int, ...] = ()
    d_norm: tuple[str, ...] = ()   # D's normalisation (model_args d_norm; its default, batch, when unset)
    pretrained: bool | None = None  # class-head pre-training before the GAN

    def matches(self, runs: pd.DataFrame) -> pd.Series:
        ok = pd.Series(True, index=runs.index)
        for column, allowed in (("model", self.model), ("loss", self.loss), ("num_classes", self.num_classes)):
            if allowed:
                ok &= runs[column].isin(allowed)
        if self.data:
            names = tuple(_name(d) for d in self.data)
            ok &= represents(runs).map(lambda d: _name(d).startswith(names))
        if self.d_norm:
            ok &= d_norm(runs).isin(self.d_norm)
        if self.pretrained is not None:
            ok &= pretrained(runs) == self.pretrained
        return ok

    def holds(self, runs: pd.DataFrame) -> bool:
        """Every one of `runs` is in the setting."""
        return bool(len(runs)) and bool(self.matches(runs).all())


def _name(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", str(text).lower())


def represents(runs: pd.DataFrame) -> pd.Series:
    """What each run's data is, or stands in for: stands_in_for, else '(stand-in for X)' in the data
    label, else the dataset's name."""
    label = runs["data_label"] if "data_label" in runs else pd.Series("", index=runs.index)
    out = label.astype(str).str.extract(r"\(stand-in for (.*)\)$")[0]
    if "stands_in_for" in runs:
        out = runs["stands_in_for"].where(runs["stands_in_for"].notna(), out)
    fallback = runs["dataset"] if "dataset" in runs else label
    return out.where(out.notna(), fallback).astype(str)


def pretrained(runs: pd.DataFrame) -> pd.Series:
    """Per run: whether its class head was pre-trained before the GAN."""
    if "pretrain_epochs" not in runs:
        return pd.Series(False, index=runs.index)
    return runs["pretrain_epochs"].fillna(0) > 0


def d_norm(runs: pd.DataFrame) -> pd.Series:
    """D's normalisation per run, from the nets label (model_args as 'k=v, ...'); batch when unset."""
    nets = runs["nets"] if "nets" in runs else pd.Series("", index=runs.index)
    return nets.fillna("").astype(str).str.extract(r"(?:^|, )d_norm=(\w+)")[0].fillna("batch")


@dataclass(frozen=True)
class Basis:
    """What a claim's verdict rests on: the estimate over seeds and the band [low, high] the claim
    puts it in; kept on the Claim so the page can re-decide it on Holm's adjusted p."""
    spread: Spread
    low: float = -INF
    high: float = INF
    instead_of_inconsistent: str | None = None  # a reason the runs cannot speak against the claim

    @property
    def p(self) -> float:
        return min(band_p(self.spread, self.low, self.high))

    def verdict(self, p: float, m: int = 1) -> str:
        """The verdict at ALPHA on `p` (raw, or Holm-adjusted over m tests)."""
        p_for, p_against = band_p(self.spread, self.low, self.high)
        if p < ALPHA:
            if p_for <= p_against:
                return CONSISTENT
            return self.instead_of_inconsistent or INCONSISTENT
        alpha = ALPHA / m  # Holm rejects any p below alpha / m, whatever the page's other tests
        n = seeds_needed(self.spread, self.low, self.high, alpha)
        needed = f"more than {MAX_SEEDS:,}" if n is None else f"~{n}"
        per = " per group" if len(self.spread.ns) == 2 else ""
        way = "confirm" if self.low < self.spread.estimate < self.high else "refute"
        return (f"{UNDERPOWERED}: {needed} seeds{per} would {way} it with {POWER:.0%} power at alpha {alpha:.2g}, "
                "were the observed effect and spread the truth")


@dataclass(frozen=True)
class Claim:
    source: str      # who claims it: a write-up ("004", "004 (extension)"), "ours" or "control"
    claim: str       # in the source's terms
    setting: str     # where the source saw it (the runs judged); "-" where that is not a question
    measured: str    # our estimate with its interval over seeds
    test: str        # how the verdict is reached
    verdict: str
    p: float | None = None       # the verdict's test, before adjustment (None: no test)
    p_holm: float | None = None  # after Holm over the page's tests (claims_table)
    basis: Basis | None = None


def interval_text(spread: Spread, low: float = -INF, high: float = INF) -> str:
    """estimate [interval]: 90% for a band (TOST's), 95% for a line; no interval without spread."""
    if spread.one_seed:
        return f"{spread.estimate:.3g} (1 seed)"
    if spread.all_same:
        return f"{spread.estimate:.3g} ({ALL_SAME})"
    level = 0.90 if not (math.isinf(low) or math.isinf(high)) else 0.95
    lo, hi = spread.interval(level)
    return f"{spread.estimate:.3g} [{lo:.3g}, {hi:.3g}]" + (" (90% interval)" if level == 0.90 else "")


def judge(source: str, claim: str, setting: Setting, in_setting: bool, measured: str, test: str, spread: Spread,
          low: float = -INF, high: float = INF, instead_of_inconsistent: str | None = None) -> Claim:
    """A claim row: judged on its raw p in the setting, an extension outside it. `measured` is a
    prefix; the estimate and its interval follow."""
    text = f"{measured}{interval_text(spread, low, high)}"
    if not in_setting:
        return Claim(f"{source} (extension)", claim, setting.text, text, "none: outside the setting", EXTENSION)
    if spread.one_seed:
        return Claim(source, claim, setting.text, text, test, ONE_SEED)
    if spread.all_same:  # no test, but where the one value sits is plain to see
        side = "on the claim's side" if low <= spread.estimate <= high else "outside the claim"
        return Claim(source, claim, setting.text, text, test, f"{ALL_SAME} ({side}; no test)")
    basis = Basis(spread, low, high, instead_of_inconsistent)
    return Claim(source, claim, setting.text, text, test, basis.verdict(basis.p), basis.p, None, basis)


def not_run(source: str, claim: str, setting: Setting, why: str = "no run in the setting") -> Claim:
    return Claim(source, claim, setting.text, why, "-", NOT_RUN)


def not_judged(rows: list[Claim], written) -> list[Claim]:
    """A 'not run' row for each declared (setting, source, claim) that no row judged in its setting."""
    judged = {(c.setting, c.source) for c in rows}
    return [not_run(source, words, setting) for setting, source, words in written
            if (setting.text, source) not in judged]


def adjust(claims: list[Claim]) -> list[Claim]:
    """Holm over the page's tested claims, each verdict re-decided on its adjusted p."""
    tested = [i for i, c in enumerate(claims) if c.basis is not None]
    adjusted = holm([claims[i].p for i in tested])
    out = list(claims)
    for i, p in zip(tested, adjusted):
        out[i] = replace(claims[i], p_holm=p, verdict=claims[i].basis.verdict(p, len(tested)))
    return out


def claims_table(claims: list[Claim]) -> pd.DataFrame:
    """The claims section's table, verdicts on Holm-adjusted p over this page's tests; the p columns
    only where a claim was tested."""
    claims = adjust(claims)
    m = sum(c.basis is not None for c in claims)
    rows = [{"source": c.source, "claim": c.claim, "setting": c.setting, "measured": c.measured, "test": c.test,
             "p": _p(c.p), f"p (Holm, {m} tests)": _p(c.p_holm), "verdict": c.verdict} for c in claims]
    shown = ["p", f"p (Holm, {m} tests)"] if m else []
    return pd.DataFrame(rows, columns=["source", "claim", "setting", "measured", "test", *shown, "verdict"])


def _p(p: float | None) -> str:
    return "-" if p is None else f"{p:.2g}"

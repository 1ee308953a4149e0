"""The write-ups' claims beside what the runs measured, each with its test and a verdict.

One function per study (CLAIMS, keyed by the study's name in params.yaml) turns the study's
summary rows (and per-iteration diagnostics) into Claim rows. A verdict is never forced:

* consistent: the 95% interval over seeds lies entirely on the claim's side;
* inconsistent: it lies entirely on the other side;
* cannot tell at this scale: the interval straddles the line, there is one seed, or the study
  did not run what the claim is about.

Intervals are Student-t intervals of the mean over seeds; differences between two variants use
Welch's interval and test (report.welch). Thresholds that turn a write-up's words into a line
("works", "about half", "barely differs") are stated in each claim's `test` column.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.stats import DATA, fmt_ci, headline_metric, loss_spikes, mean_ci, welch

CONSISTENT, INCONSISTENT, CANNOT_TELL = "consistent", "inconsistent", "cannot tell at this scale"
PASS, FAIL = "pass", "FAIL"
WORKS = 0.8          # conditional accuracy read as "draws the requested class"
HALF = (0.3, 0.7)    # ... read as "about half of the classes work"
LEARNED = 2.0        # no variant above this multiple of chance: the runs were too short to judge ACGAN
SIMILAR = 0.10       # "barely differs": the difference is within 10% of the two means' average
BLIND = 0.01         # |mean D(real) - D(fake)| below this: D does not separate real from generated batches
VANISHED = 0.1       # mean D(G(z)) below this: D rejects the fakes (the saturating loss's regime)
CONTROL_ACC, CONTROL_CONFIDENCE, CONTROL_CLASSES = 0.9, 0.9, 9  # issue 13's positive controls


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


def controls(summary: pd.DataFrame, steps: pd.DataFrame) -> list[Claim]:
    """Positive controls: every seed of a known-good configuration must pass (a conditional net:
    conditional accuracy and class coverage; an unconditional one: the classifier's confidence
    and coverage)."""
    rows = []
    for variant, group in summary.groupby("variant", sort=True):
        conditional = group["cond_acc"].notna().all() if "cond_acc" in group else False
        metric, floor = ("cond_acc", CONTROL_ACC) if conditional else ("confidence", CONTROL_CONFIDENCE)
        per_seed = [f"seed {r.seed}: {getattr(r, metric):.3f}, {r.classes_covered} classes"
                    for r in group.sort_values("seed").itertuples()]
        passed = bool(((group[metric] >= floor) & (group["classes_covered"] >= CONTROL_CLASSES)).all())
        rows.append(Claim(
            "control", f"{variant} on {group[DATA].iloc[0]}: {metric} >= {floor} with >= {CONTROL_CLASSES} "
                       f"classes covered, every seed", "; ".join(per_seed),
            f"each seed against the threshold ({len(group)} seed{'s' * (len(group) != 1)})", PASS if passed else FAIL))
    return rows


def generator_loss(summary: pd.DataFrame, steps: pd.DataFrame) -> list[Claim]:
    """Seed 004 (the generator-loss comparison) and seed 003 (the MNIST MLP GAN).

    Seed 004's snippets swap the labels: its "min log(1 - D)" code, BCE(D(G(z)), ones), is our
    `non_saturating`; its "max log D" code, -BCE(D(G(z)), zeros), is our `minimax`."""
    rows = []
    is_col, fid_col = headline_metric(summary, "is"), headline_metric(summary, "fid")
    for (model, data), group in summary.groupby(["model", DATA], sort=True):
        by_loss = {loss: g for loss, g in group.groupby("loss")}
        where = f"{model} on {data}"
        if is_col and {"minimax", "non_saturating"} <= set(by_loss):
            measured, verdict = equivalent(by_loss["non_saturating"][is_col], by_loss["minimax"][is_col])
            rows.append(Claim("004", f"{where}: IS barely differs between the two BCE generator losses",
                              f"{is_col} non_saturating - minimax: {measured}",
                              f"Welch 95% interval within +-{SIMILAR:.0%} of the mean IS", verdict))
        for column, claimed, reading in ((is_col, "higher", "a better IS"), (fid_col, "lower", "a better FID")):
            if not column or "hinge" not in by_loss or len(by_loss) < 2:
                continue
            others = {k: v[column].mean() for k, v in by_loss.items() if k != "hinge"}
            best = (max if claimed == "higher" else min)(others, key=others.get)
            measured, verdict = difference(by_loss["hinge"][column], by_loss[best][column], claimed)
            rows.append(Claim("004", f"{where}: hinge gives {reading} than the BCE losses",
                              f"{column} hinge - {best} (the better BCE loss): {measured}",
                              f"Welch 95% interval {'above' if claimed == 'higher' else 'below'} 0", verdict))
        if model == "mlp" and "confidence" in group:
            for loss, g in sorted(by_loss.items()):
                measured, verdict = interval_side(g["confidence"], low=CONTROL_CONFIDENCE)
                covered = g["classes_covered"].mean()
                if verdict == CONSISTENT and covered < CONTROL_CLASSES:
                    verdict = INCONSISTENT
                rows.append(Claim("003", f"{where}, {loss}: after training, G draws clear digits of every class",
                                  f"classifier confidence {measured}; {covered:.1f} of 10 classes covered (mean)",
                                  f"95% interval of the mean confidence >= {CONTROL_CONFIDENCE} and >= "
                                  f"{CONTROL_CLASSES} classes covered", verdict))
    rows += vanishing_gradient(summary, steps)
    return rows


def vanishing_gradient(summary: pd.DataFrame, steps: pd.DataFrame) -> list[Claim]:
    """Seed 004's reason for the non-saturating loss: where D rejects the fakes (mean D(G(z)) <
    VANISHED), the saturating loss's gradient to G vanishes. Per run: the median G gradient norm
    over such logged iterations; then minimax against non_saturating over seeds."""
    if steps.empty or "d_fake" not in steps:
        return []
    rows = []
    # per run: median G gradient norm over the logged iterations where D rejected the fakes
    median = steps[steps["d_fake"] < VANISHED].groupby("experiment")["g_grad_norm"].median()
    spikes = loss_spikes(steps)
    for (model, data), group in summary.groupby(["model", DATA], sort=True):
        runs = {loss: list(g["experiment"]) for loss, g in group.groupby("loss")}
        if not {"minimax", "non_saturating"} <= set(runs):
            continue
        sat, ns = median.reindex(runs["minimax"]).dropna(), median.reindex(runs["non_saturating"]).dropna()
        if len(sat) and len(ns):
            measured, verdict = difference(np.log10(sat), np.log10(ns), "lower")
            rows.append(Claim(
                "004", f"{model} on {data}: where D rejects the fakes, the saturating (minimax) loss gives G a "
                       "vanishing gradient", f"log10 median G gradient norm, minimax - non_saturating: {measured} "
                       f"(medians {sat.median():.3g} vs {ns.median():.3g})",
                f"iterations with mean D(G(z)) < {VANISHED}; Welch 95% interval below 0", verdict))
        else:
            rows.append(Claim("004", f"{model} on {data}: the saturating loss's gradient vanishes where D rejects "
                                     "the fakes", f"D never rejected the fakes (mean D(G(z)) < {VANISHED}) in a "
                                                 "logged iteration of both losses", "-", CANNOT_TELL))
        sat, others = spikes.reindex(runs["minimax"]).dropna(), spikes.reindex(runs["non_saturating"]).dropna()
        if len(sat) and len(others):
            measured, verdict = difference(sat, others, "higher")
            rows.append(Claim("004", f"{model} on {data}: the saturating loss's G loss spikes (seen on STL-10)",
                              f"spike score minimax - non_saturating: {measured}",
                              "spike score: max / median absolute deviation of G's loss from its median; "
                              "Welch 95% interval above 0", verdict))
    return rows


def acgan_classes(summary: pd.DataFrame, steps: pd.DataFrame) -> list[Claim]:
    """Seed 000: ACGAN draws the requested class with 5 classes, about half of them with 10, and
    collapses with 49; a cGAN with the same networks does better. Judged once per set of networks
    (`nets`, the runs' model_args): the write-up's, and any other the study ran beside them."""
    rows = []
    nets_sets = summary.groupby("nets", sort=False) if "nets" in summary else [("", summary)]
    for _, runs in nets_sets:
        rows += _class_count_claims(runs)
    if 49 not in set(summary["num_classes"]):
        rows.append(Claim("000", "49 classes: ACGAN collapses (wrong glyphs, few modes)",
                          "not run at this scale (Kuzushiji-49 is not embedded)", "-", CANNOT_TELL))
    rows += _batch_blind_discriminator(summary, steps)
    return rows


def _class_count_claims(runs: pd.DataFrame) -> list[Claim]:
    """The class-count claims for runs that share one set of networks."""
    rows = []

    def values(n: int, model: str, loss: str | None = None) -> pd.DataFrame:
        chosen = (runs["num_classes"] == n) & (runs["model"] == model)
        if loss:
            chosen &= runs["loss"] == loss
        return runs[chosen]

    ns = sorted(runs["num_classes"].unique())
    as_written = {n: values(n, "acgan", "minimax") for n in (*ns, 5, 10)}
    for n, (band, words) in {5: ((WORKS, 1.0), "draws the requested class"),
                             10: (HALF, "draws the requested class for about half of the classes")}.items():
        written = as_written[n]
        if written.empty:
            if n not in ns:
                rows.append(Claim("000", f"{n} classes: ACGAN {words}", "not run at this scale", "-", CANNOT_TELL))
            continue
        measured, verdict = interval_side(written["cond_acc"], *band)
        best = runs[runs["num_classes"] == n].groupby("variant")["cond_acc"].mean().max()
        if verdict == INCONSISTENT and best < LEARNED * (1 / n):
            verdict = f"{CANNOT_TELL} (no variant learned its labels: best mean {best:.2f})"
        rows.append(Claim("000", f"{n} classes: {written['variant'].iloc[0]} {words}",
                          f"conditional accuracy {measured} (chance {1 / n:.2f})",
                          f"95% interval of the mean within [{band[0]}, {band[1]}]", verdict))
    for n in ns:
        written = as_written[n]
        for other, claim, source in (
                (values(n, "cgan"), "a cGAN with the same networks draws the requested class more often than", "000"),
                (values(n, "acgan", "non_saturating"), "with the non-saturating G loss, ACGAN draws the requested "
                                                       "class more often than", "ours")):
            if len(other) and len(written):
                measured, verdict = difference(other["cond_acc"], written["cond_acc"], "higher")
                rows.append(Claim(source, f"{n} classes: {claim} {written['variant'].iloc[0]}",
                                  f"conditional accuracy {other['variant'].iloc[0]} - {written['variant'].iloc[0]}: "
                                  f"{measured}", "Welch 95% interval above 0", verdict))
    return rows


def _batch_blind_discriminator(summary: pd.DataFrame, steps: pd.DataFrame) -> list[Claim]:
    """Ours: with BatchNorm closing D's last hidden layer and the real and the generated batch
    passed to D separately, every batch's mean adversarial logit is the same (BN's shift through
    the last linear layer), so D cannot tell a real batch from a generated one. Per run: mean
    D(real) - D(fake) over its last tenth of logged iterations, per set of networks."""
    if steps.empty or "d_real" not in steps or "nets" not in summary:
        return []
    last = steps[steps["step"] >= 0.9 * steps.groupby("experiment")["step"].transform("max")]
    gap = (last["d_real"] - last["d_fake"]).groupby(last["experiment"]).mean()
    rows = []
    for nets, runs in summary.groupby("nets", sort=False):
        measured, verdict = interval_side(gap.reindex(runs["experiment"]).dropna(), -BLIND, BLIND)
        variants = "; ".join(sorted(runs["variant"].unique()))
        rows.append(Claim("ours", f"{variants}: D's mean output is the same for a real and a generated batch",
                          f"mean D(real) - D(fake), last tenth of training: {measured} ({len(runs)} runs)",
                          f"95% interval within +-{BLIND}", verdict))
    return rows


CLAIMS = {"controls": controls, "generator_loss": generator_loss, "acgan_classes": acgan_classes}


def claims_table(claims: list[Claim]) -> pd.DataFrame:
    return pd.DataFrame([vars(c) for c in claims], columns=["source", "claim", "measured", "test", "verdict"])

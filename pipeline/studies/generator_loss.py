"""Generator-loss study: seed 004's comparison of the BCE generator losses and hinge, and seed 003's
MNIST MLP GAN; its comparison tables group runs by loss (and model)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.claims import CANNOT_TELL, CONSISTENT, INCONSISTENT, SIMILAR, Claim, difference, equivalent, interval_side
from pipeline.stats import DATA, headline_metric, loss_spikes
from pipeline.studies.base import StudyReport
from pipeline.studies.controls import CONTROL_CLASSES, CONTROL_CONFIDENCE

VANISHED = 0.1       # mean D(G(z)) below this: D rejects the fakes (the saturating loss's regime)


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


REPORT = StudyReport(claims=generator_loss, by="loss")

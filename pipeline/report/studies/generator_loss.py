"""Generator-loss study: seed 004's comparison of the BCE generator losses and hinge, and seed 003's
MNIST MLP GAN; its comparison tables group runs by loss (and model).

Seed 004's snippets swap the labels: its "min log(1 - D)" code, BCE(D(G(z)), ones), is our
`non_saturating`; its "max log D" code, -BCE(D(G(z)), zeros), is our `minimax`. Seed 003's G loss,
sigmoid cross-entropy of D(G(z)) against ones, is -log D(G(z)): `non_saturating` (that D(G(z)) has
already been through a sigmoid is a fault of its code, docs/deviations.md, not another loss)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.report.claims import EXTENSION, NO_VERDICT, SIMILAR, Claim, Setting, judge, not_judged
from pipeline.report.stats import DATA, Spread, headline_metric, loss_spikes
from pipeline.report.studies.base import StudyReport
from pipeline.report.studies.controls import CONTROL_CLASSES, CONTROL_CONFIDENCE

VANISHED = 0.1       # mean D(G(z)) below this: D rejects the fakes (the saturating loss's regime)
BCE = ("minimax", "non_saturating")

# Where each claim was seen. 004: DCGAN, 300 epochs, Inception Score; on CIFAR-10 either loss was
# "fairly stable"; STL-10 reused an earlier post's code, set up so that D's output goes to 0, and
# only there did it run hinge and see G's loss spike (with its "max log D" code: our minimax). Its
# gradient reasoning is the "How to train a GAN" tip it tests: it matters where D rejects the fakes.
BCE_ALIKE = Setting("004: DCGAN on CIFAR-10 / STL-10, IS", model=("dcgan",), data=("CIFAR-10", "STL-10"))
HINGE_BETTER = Setting("004: DCGAN on STL-10 (hinge ran there), stated for both data sets, IS",
                       model=("dcgan",), data=("CIFAR-10", "STL-10"))
VANISHING = Setting("004 (reasoning): DCGAN on CIFAR-10 / STL-10, iterations where D rejects the fakes",
                    model=("dcgan",), data=("CIFAR-10", "STL-10"))
SPIKES = Setting("004: DCGAN on STL-10 set up so that D wins (CIFAR-10: 'fairly stable')",
                 model=("dcgan",), data=("STL-10",))
CLEAR_DIGITS = Setting("003: its MLP GAN on MNIST with its G loss, -log D(G(z)) (non_saturating)",
                       model=("mlp",), loss=("non_saturating",), data=("MNIST",))
WRITTEN = ((BCE_ALIKE, "004", "IS barely differs between the two BCE generator losses"),
           (HINGE_BETTER, "004", "hinge gives a better IS than the BCE losses"),
           (VANISHING, "004", "where D rejects the fakes, the saturating (minimax) loss gives G a vanishing gradient"),
           (SPIKES, "004", "the saturating (minimax) loss's G loss spikes"),
           (CLEAR_DIGITS, "003", "after training, G draws clear digits of every class"))


def generator_loss(summary: pd.DataFrame, steps: pd.DataFrame, per_class: pd.DataFrame | None = None) -> list[Claim]:
    """Seed 004 (the generator-loss comparison) and seed 003 (the MNIST MLP GAN), each claim judged
    on the runs in its setting; the write-up's metric (IS) before FID."""
    rows = []
    is_col, fid_col = headline_metric(summary, "is"), headline_metric(summary, "fid")
    for (model, data), group in summary.groupby(["model", DATA], sort=True):
        by_loss = {loss: g for loss, g in group.groupby("loss")}
        where = f"{model} on {data}"
        for column, name in ((is_col, "IS"), (fid_col, "FID")):
            second = "" if name == "IS" else " (FID: our second metric)"
            if column and set(BCE) <= set(by_loss):
                a, b = by_loss["non_saturating"][column], by_loss["minimax"][column]
                margin = SIMILAR * (a.mean() + b.mean()) / 2
                runs = pd.concat([by_loss["non_saturating"], by_loss["minimax"]])
                rows.append(judge("004", f"{where}: {name} barely differs between the two BCE generator losses{second}",
                                  BCE_ALIKE, BCE_ALIKE.holds(runs), f"{column} non_saturating - minimax: ",
                                  f"TOST (Welch df), margin +-{SIMILAR:.0%} of the two means' average "
                                  f"(+-{margin:.3g})", Spread.of(a, b), -margin, margin))
            # against the better of the write-up's two BCE losses (not least squares or WGAN-GP beside them)
            bce = {k: v[column].mean() for k, v in by_loss.items() if k in BCE} if column else {}
            if "hinge" in by_loss and bce:
                higher = name == "IS"
                best = (max if higher else min)(bce, key=bce.get)
                runs = pd.concat([by_loss["hinge"], by_loss[best]])
                rows.append(judge("004", f"{where}: hinge gives a better {name} than the BCE losses{second}",
                                  HINGE_BETTER, HINGE_BETTER.holds(runs),
                                  f"{column} hinge - {best} (the better BCE loss): ",
                                  f"Welch t-test, two-sided, against 0 ({'above' if higher else 'below'} 0 claimed)",
                                  Spread.of(by_loss["hinge"][column], by_loss[best][column]),
                                  *((0.0, np.inf) if higher else (-np.inf, 0.0))))
        if model == "mlp" and "confidence" in group:
            for loss, g in sorted(by_loss.items()):
                in_setting = CLEAR_DIGITS.holds(g)
                rows.append(judge("003", f"{where}, {loss}: after training, G draws clear digits",
                                  CLEAR_DIGITS, in_setting, "classifier confidence: ",
                                  f"one-sample t-test, two-sided, against {CONTROL_CONFIDENCE} (above claimed)",
                                  Spread.of(g["confidence"]), CONTROL_CONFIDENCE))
                rows.append(judge("003", f"{where}, {loss}: after training, G draws digits of every class",
                                  CLEAR_DIGITS, in_setting,
                                  "classes covered (of 10): ",
                                  f"one-sample t-test, two-sided, against {CONTROL_CLASSES} (at least claimed)",
                                  Spread.of(g["classes_covered"]), CONTROL_CLASSES))
    rows += vanishing_gradient(summary, steps)
    return rows + not_judged(rows, WRITTEN)


def vanishing_gradient(summary: pd.DataFrame, steps: pd.DataFrame) -> list[Claim]:
    """Seed 004's reason for the non-saturating loss: where D rejects the fakes (mean D(G(z)) <
    VANISHED), the saturating loss's gradient to G vanishes. Per run: the median G gradient norm
    over such logged iterations; then minimax against non_saturating over seeds. And the spikes of
    G's loss it saw with the saturating loss on STL-10."""
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
        pair = group[group["loss"].isin(["minimax", "non_saturating"])]
        claim = (f"{model} on {data}: where D rejects the fakes, the saturating (minimax) loss gives G a vanishing "
                 "gradient")
        sat, ns = median.reindex(runs["minimax"]).dropna(), median.reindex(runs["non_saturating"]).dropna()
        if len(sat) and len(ns):
            rows.append(judge("004", claim, VANISHING, VANISHING.holds(pair),
                              f"log10 median G gradient norm, minimax - non_saturating (medians {sat.median():.3g} "
                              f"vs {ns.median():.3g}): ",
                              f"iterations with mean D(G(z)) < {VANISHED}; Welch t-test, two-sided (below 0 claimed)",
                              Spread.of(np.log10(sat), np.log10(ns)), high=0.0))
        else:
            in_setting = VANISHING.holds(pair)
            rows.append(Claim("004" if in_setting else "004 (extension)", claim, VANISHING.text,
                              f"D never rejected the fakes (mean D(G(z)) < {VANISHED}) in a logged iteration of both "
                              "losses", "-", f"{NO_VERDICT}: nothing to measure" if in_setting else EXTENSION))
        sat, others = spikes.reindex(runs["minimax"]).dropna(), spikes.reindex(runs["non_saturating"]).dropna()
        if len(sat) and len(others):
            rows.append(judge("004", f"{model} on {data}: the saturating (minimax) loss's G loss spikes", SPIKES,
                              SPIKES.holds(pair), "spike score minimax - non_saturating: ",
                              "spike score: max / median absolute deviation of G's loss from its median; Welch "
                              "t-test, two-sided (above 0 claimed)", Spread.of(sat, others), low=0.0))
    return rows


REPORT = StudyReport(claims=generator_loss, by="loss")

"""ACGAN class-count study: seed 000's claims on which classes ACGAN draws as asked with 5, 10 and
49 classes, and against a cGAN; its per-class table and the per-iteration curves the write-up
plotted (D(real) - D(fake), D's class loss on real vs generated images) replace the comparison
tables and the generic curves."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from pipeline.report.claims import INF, NO_VERDICT, Claim, Setting, judge, not_judged, pretrained
from pipeline.report.plots import plot_acgan_iterations
from pipeline.report.tables import markdown_table
from pipeline.report.stats import Spread
from pipeline.report.studies.base import StudyReport

WORKS = 0.8          # a class works: at least this share of its generated images is classified as asked
# A run's share moves in steps of 1/n: each line sits halfway between two steps, so a run exactly
# at "4 of 5" or "5 of 10" is on the claim's side, not on its edge.
NEARLY_ALL = 0.7     # "works" with 5 classes: all or nearly all (4 or 5 of 5) work
HALF = (0.45, 0.75)  # "slightly more than half" (半分強) of 10 classes work: 5 to 7 of them
FEW = 0.1            # "collapses" with 49: at most this share (4 of 49) works (it saw about one, け)
LEARNED = 2.0        # no variant above this multiple of chance: the runs were too short to judge ACGAN
TAIL = 0.1           # the per-iteration table: the last tenth of each run's logged iterations
LAST_QUARTER = 0.75  # "still rising?": conditional accuracy at the end against three quarters of the way
MOVED = 0.02         # ... a change smaller than this over the last quarter reads as flat

# Where each claim was seen: the write-up's ACGAN (its G loss, -BCE(D(G(z)), zeros), is our
# minimax; its D has BatchNorm; class-head pre-training was a later, separate try) on Kuzushiji-49,
# first with all 49 classes beside a cGAN "under the same conditions", then 10, then 5.
AS_WRITTEN = dict(model=("acgan",), loss=("minimax",), d_norm=("batch",), pretrained=False,
                  data=("Kuzushiji", "k49"))
WORKS_AT_5 = Setting("000: its ACGAN (saturating G loss, BatchNorm in D, no pre-training), Kuzushiji-49's first "
                     "5 classes", num_classes=(5,), **AS_WRITTEN)
HALF_AT_10 = Setting("000: its ACGAN (saturating G loss, BatchNorm in D, no pre-training), Kuzushiji-49's first "
                     "10 classes", num_classes=(10,), **AS_WRITTEN)
COLLAPSES_AT_49 = Setting("000: its ACGAN, all 49 classes of Kuzushiji-49", num_classes=(49,), **AS_WRITTEN)
CGAN_BETTER = Setting("000: cGAN vs its ACGAN, same networks, all 49 classes of Kuzushiji-49",
                      model=("acgan", "cgan"), loss=("minimax",), d_norm=("batch",), pretrained=False,
                      data=("Kuzushiji", "k49"), num_classes=(49,))
OURS = Setting("ours: wherever both ran")
CLASS_COUNTS = ((WORKS_AT_5, "draws the requested class (all or nearly all classes work)", NEARLY_ALL, INF),
                (HALF_AT_10, "draws the requested class for slightly more than half of the classes", *HALF),
                (COLLAPSES_AT_49, "collapses: few classes come out right", -INF, FEW))
WRITTEN = ((WORKS_AT_5, "000", "5 classes: ACGAN draws the requested class"),
           (HALF_AT_10, "000",
            "10 classes: ACGAN draws the requested class for slightly more than half of the classes"),
           (COLLAPSES_AT_49, "000", "49 classes: ACGAN collapses (wrong glyphs, few modes)"),
           (CGAN_BETTER, "000",
            "49 classes: a cGAN with the same networks draws the requested class more often than ACGAN"))


def acgan_classes(summary: pd.DataFrame, steps: pd.DataFrame, per_class: pd.DataFrame | None = None) -> list[Claim]:
    """Seed 000: per class count, the share of classes ACGAN draws as asked (per seed, from the
    per-class conditional accuracies), and a cGAN against ACGAN with the same networks (seen at 49
    classes; at 5 and 10 an extension); ours: ACGAN's two G losses."""
    shares = class_shares(per_class)
    rows = []
    for setting, words, low, high in CLASS_COUNTS:
        rows += _share_claims(summary, shares, setting, words, low, high)
    same = [c for c in ("nets", "epochs") if c in summary]  # compared only with the same networks and length
    for _, runs in (summary.groupby(same, sort=False, dropna=False) if same else [("", summary)]):
        rows += _comparisons(runs)
    return rows + not_judged(rows, WRITTEN)


def class_shares(per_class: pd.DataFrame | None) -> pd.Series:
    """Per run: the share of its classes whose conditional accuracy is at least WORKS."""
    if per_class is None or per_class.empty:
        return pd.Series(dtype=float)
    known = per_class.dropna(subset=["cond_acc"])
    return (known["cond_acc"] >= WORKS).groupby(known["experiment"]).mean()


def _share_claims(summary, shares, setting: Setting, words: str, low: float, high: float) -> list[Claim]:
    """One row per ACGAN configuration with this class count: judged where it is the write-up's."""
    n = setting.num_classes[0]
    acgan = summary[(summary["num_classes"] == n) & (summary["model"] == "acgan")]
    if acgan.empty:
        return []
    best = summary[summary["num_classes"] == n].groupby("variant")["cond_acc"].mean().max()
    learned = None if best >= LEARNED / n else (
        f"{NO_VERDICT}: no variant learned its labels (best mean {best:.2f}, chance {1 / n:.2f})")
    band = f"[{low:g}, {high:g}]" if not math.isinf(high) and not math.isinf(low) else (
        f">= {low:g}" if math.isinf(high) else f"<= {high:g}")
    test = (f"per seed: share of classes with conditional accuracy >= {WORKS}; "
            + ("TOST against " if band.startswith("[") else "one-sample t-test, two-sided, claimed ") + band)
    rows = []
    keys = [c for c in ("loss", "nets", "epochs") if c in acgan]  # one configuration: a row of its own
    configs = [runs for _, runs in acgan.assign(_pre=pretrained(acgan)).groupby([*keys, "_pre"], dropna=False)]
    for runs in sorted(configs, key=lambda r: not setting.holds(r)):  # the write-up's configuration first
        label = f"{n} classes: {runs['variant'].iloc[0]} {words}"
        values = shares.reindex(runs["experiment"]).dropna()
        if values.empty:
            source = "000" if setting.holds(runs) else "000 (extension)"
            rows.append(Claim(source, label, setting.text, "per-class conditional accuracy not available to the "
                              "claims", test, f"{NO_VERDICT}: no per-class accuracies"))
            continue
        per_seed = ", ".join(f"{round(v * n)}/{n}" for v in values)
        rows.append(judge("000", label, setting, setting.holds(runs), f"classes working per seed {per_seed}; share: ",
                          test, Spread.of(values), low, high, learned))
    return rows


def _comparisons(runs: pd.DataFrame) -> list[Claim]:
    """For one set of networks and length of training: the cGAN against the write-up's ACGAN recipe
    (the write-up saw it at 49 classes), and ACGAN with the non-saturating against the saturating G
    loss (ours)."""
    rows = []

    def chosen(n: int, model: str, loss: str) -> pd.DataFrame:
        mask = (runs["num_classes"] == n) & (runs["model"] == model) & (runs["loss"] == loss)
        return runs[mask & ~pretrained(runs)]

    for n in sorted(runs["num_classes"].unique()):
        written = chosen(n, "acgan", "minimax")
        if written.empty:
            continue
        name = written["variant"].iloc[0]
        for other, setting, source, claim in (
                (chosen(n, "cgan", "minimax"), CGAN_BETTER, "000",
                 f"{n} classes: a cGAN with the same networks draws the requested class more often than {name}"),
                (chosen(n, "acgan", "non_saturating"), OURS, "ours",
                 f"{n} classes: with the non-saturating G loss, ACGAN draws the requested class more often than "
                 f"{name}")):
            if other.empty:
                continue
            rows.append(judge(source, claim, setting, setting.holds(pd.concat([other, written])),
                              f"conditional accuracy {other['variant'].iloc[0]} - {name}: ",
                              "Welch t-test, two-sided (above 0 claimed)",
                              Spread.of(other["cond_acc"], written["cond_acc"]), low=0.0))
    return rows


def per_class_table(per_class: pd.DataFrame) -> pd.DataFrame:
    """Per variant and class count: each requested class's conditional accuracy, mean over seeds
    (lowest to highest seed), and per seed the share of classes at or above WORKS."""
    known = per_class.dropna(subset=["cond_acc"])
    widest = known.sort_values("num_classes").drop_duplicates("class_index", keep="last")
    names = widest.set_index("class_index")["class"]  # each index named as the runs with the most classes name it
    shares = class_shares(known)
    rows = []
    for (variant, n), runs in known.groupby(["variant", "num_classes"], sort=True):
        row = {"variant": variant, "classes": n, "seeds": runs["experiment"].nunique(),
               f"share >= {WORKS} per seed": ", ".join(f"{v:.2f}" for v in shares.reindex(runs["experiment"].unique()))}
        for i, acc in runs.groupby("class_index")["cond_acc"]:
            row[f"{i}: {names[i]}"] = f"{acc.mean():.2f} ({acc.min():.2f}-{acc.max():.2f})"
        rows.append(row)
    return pd.DataFrame(rows).fillna("-")


def iteration_table(steps: pd.DataFrame) -> pd.DataFrame:
    """Over each run's last TAIL of logged iterations: D(real) - D(fake) and D's class loss on real
    and on generated images (and their ratio), mean over seeds (lowest to highest seed); no verdict."""
    last = steps[steps["step"] >= (1 - TAIL) * steps.groupby("experiment")["step"].transform("max")]
    last = last.assign(d_gap=last["d_real"] - last["d_fake"])
    per_run = last.groupby(["variant", "num_classes", "experiment"])[
        [c for c in ("d_gap", "cls_real", "cls_fake") if c in last]].mean()
    if {"cls_real", "cls_fake"} <= set(per_run):  # the write-up's reading: 20x early, 5x late, ideally 1
        per_run["cls_ratio"] = per_run["cls_real"] / per_run["cls_fake"]
    rows = []
    for (variant, n), runs in per_run.groupby(level=["variant", "num_classes"], sort=True):
        row = {"variant": variant, "classes": n, "seeds": len(runs)}
        for column, name in (("d_gap", "D(real) - D(fake)"), ("cls_real", "class loss, real"),
                             ("cls_fake", "class loss, generated"), ("cls_ratio", "real / generated")):
            values = runs[column].dropna() if column in runs else pd.Series(dtype=float)
            row[name] = f"{values.mean():.3g} ({values.min():.3g} to {values.max():.3g})" if len(values) else "-"
        rows.append(row)
    return pd.DataFrame(rows)


def end_trend(history: pd.DataFrame) -> pd.DataFrame:
    """Per variant, class count and length: the per-epoch conditional accuracy at the last epoch
    minus at LAST_QUARTER of the run, per seed; 'rising' when every seed gained more than MOVED,
    'flat' when none moved by more, else 'mixed'. Says whether longer runs could move the finals."""
    column = "cond_acc_cheap"
    if column not in history:
        return pd.DataFrame()
    rows = []
    for (variant, n), runs in history.dropna(subset=[column]).groupby(["variant", "num_classes"], sort=True):
        for epochs, same_length in runs.groupby(runs.groupby("experiment")["epoch"].transform("max")):
            gains = []
            for _, run in same_length.groupby("experiment"):
                at = run.set_index("epoch")[column]
                gains.append(at.iloc[-1] - at[at.index >= LAST_QUARTER * epochs].iloc[0])
            trend = ("rising" if min(gains) > MOVED else "flat" if max(abs(g) for g in gains) <= MOVED else "mixed")
            rows.append({"variant": variant, "classes": n, "epochs": int(epochs), "seeds": len(gains),
                         f"{column}, last quarter's change per seed": ", ".join(f"{g:+.3f}" for g in gains),
                         "at the end": trend})
    return pd.DataFrame(rows)


def acgan_sections(study: str, frame: pd.DataFrame, in_study: dict[str, pd.DataFrame],
                   plots_dir: Path) -> tuple[list[str], list[Path]]:
    """The per-class table behind the class-count claims; the write-up's per-iteration curves per
    variant and class count, with their values over the last tenth of training (no verdict)."""
    parts, plots = [], []
    per_class = in_study.get("per_class")
    if per_class is not None and not per_class.empty:
        parts.append(f"### Per-class conditional accuracy\n\nThe class-count claims' data: per requested class, "
                     f"mean over seeds (lowest-highest seed); a class works at {WORKS} or more.\n\n"
                     f"{markdown_table(per_class_table(per_class))}\n")
    history = in_study.get("history")
    trend = end_trend(history) if history is not None and not history.empty else pd.DataFrame()
    if not trend.empty:
        parts.append(f"### Still rising at the end?\n\nPer-epoch conditional accuracy (the cheap evaluation) at the "
                     f"last epoch minus at {LAST_QUARTER:.0%} of the run: 'rising' where every seed gained more "
                     f"than {MOVED}, 'flat' where none moved more. Where it is rising, longer runs could move the "
                     f"final numbers.\n\n{markdown_table(trend)}\n")
    steps = in_study.get("steps")
    if steps is not None and not steps.empty and {"d_real", "d_fake"} <= set(steps):
        plots_dir.mkdir(parents=True, exist_ok=True)
        plots += plot_acgan_iterations(study, steps, plots_dir)
        parts.append(f"### D(real) - D(fake) and D's class losses per iteration\n\nWhat the write-up plotted, "
                     f"per variant and class count (plots below); here their mean over each run's last "
                     f"{TAIL:.0%} of logged iterations, mean over seeds (lowest to highest seed). "
                     f"No verdict: the write-up draws none from them.\n\n{markdown_table(iteration_table(steps))}\n")
    return parts, plots


REPORT = StudyReport(claims=acgan_classes, by=None, iteration_plots=False, extra=acgan_sections)

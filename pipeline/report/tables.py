"""The report's markdown tables: mean [95% t-interval] over seeds per group of runs, Welch
differences between groups, and the comparison sections every study gets unless its plug-in
says otherwise (pipeline/report/studies)."""
from __future__ import annotations

import math

import pandas as pd

from pipeline.core.extractors import HELDOUT
from pipeline.report.stats import DATA, fmt_ci, headline_metric, mean_ci, welch

CLASS_METRICS = ("cond_acc", "classes_covered", "class_entropy_norm", "fid_classifier")
NO_HOLDOUT = "no holdout"  # an Every-run cell where the run's data has no held-out images (metrics.json says why)


def measured_by_classifier(metric: str) -> bool:
    """Metrics only as good as the dataset classifier behind them."""
    base = metric.removeprefix("best_").removesuffix(HELDOUT)
    return base.endswith("_classifier") or base in ("cond_acc", "classes_covered", "class_entropy", "class_entropy_norm",
                                                    "confidence", "confident_classes")


def metric_columns(summary: pd.DataFrame) -> list[str]:
    """Final-checkpoint metrics present for every run (e.g. fid_effnet, is_effnet, cond_acc), each
    held-out FID / KID right after its training-image twin (present for some runs: data without a
    holdout has none)."""
    scalar = ("fid", "is", "kid", "cond", "classes", "class")
    columns = [c for c in summary.columns if c.split("_")[0] in scalar and not c.endswith(HELDOUT)
               and summary[c].notna().all()]
    out = []
    for c in columns:
        out.append(c)
        if c + HELDOUT in summary and summary[c + HELDOUT].notna().any():
            out.append(c + HELDOUT)
    return out


def group_table(summary: pd.DataFrame, metrics: list[str], by: str = "loss") -> pd.DataFrame:
    """Mean [95% t-interval] over seeds of each metric, per dataset and `by` (loss, or variant),
    and per model when grouping by loss."""
    keys = ["model", DATA, by] if by == "loss" else [DATA, by]
    rows = []
    for values, group in summary.groupby(keys, sort=True):
        row = {**dict(zip(keys, values)), "seeds": len(group)}
        row.update({m: cell(group, m) for m in metrics if m in group and group[m].notna().all()})
        rows.append(row)
    return pd.DataFrame(rows)


def cell(group: pd.DataFrame, metric: str) -> str:
    """Mean [95% t-interval] of a metric over a group of runs, marked when measured with a
    dataset classifier below its accuracy floor."""
    text = fmt_ci(*mean_ci(group[metric]))
    if measured_by_classifier(metric) and "classifier_reliable" in group and not group["classifier_reliable"].all():
        text += " (unreliable: classifier below its floor)"
    return text


def pairwise_table(summary: pd.DataFrame, metric: str, by: str = "loss") -> pd.DataFrame:
    """Within each dataset (and model, by loss), every pair of `by` values: difference of the mean
    metric, its Welch 95% interval and p-value."""
    keys = ["model", DATA] if by == "loss" else [DATA]
    rows = []
    for values, group in summary.groupby(keys, sort=True):
        groups = {name: g[metric].dropna().to_numpy() for name, g in group.groupby(by, sort=True)}
        names = sorted(n for n in groups if len(groups[n]))
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                diff, lo, hi, p = welch(groups[a], groups[b])
                rows.append({**dict(zip(keys, values)), "pair": f"{a} - {b}", f"diff {metric}": diff,
                             "95% interval": "n/a (1 seed)" if math.isnan(lo) else f"[{lo:.3g}, {hi:.3g}]",
                             "p (Welch)": p})
    return pd.DataFrame(rows)


def ssl_table(summary: pd.DataFrame) -> pd.DataFrame:
    """K+1 D test accuracy, its supervised-only baseline, and the gain (paired by seed), per dataset."""
    rows = []
    for dataset, group in summary.dropna(subset=["ssl_acc"]).groupby(DATA, sort=True):
        rows.append({"data": dataset, "seeds": len(group), "labelled images": int(group["ssl_labelled_images"].iloc[0]),
                     "K+1 D accuracy": fmt_ci(*mean_ci(group["ssl_acc"])),
                     "supervised only": fmt_ci(*mean_ci(group["ssl_baseline_acc"])),
                     "gain": fmt_ci(*mean_ci(group["ssl_gain"]))})
    return pd.DataFrame(rows)


def class_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Mean [95% interval] of each class metric per variant and number of classes."""
    metrics = [m for m in CLASS_METRICS if m in summary and summary[m].notna().any()]
    rows = []
    for (variant, n), group in summary.groupby(["variant", "num_classes"], sort=True):
        row = {"variant": variant, "num_classes": n, "seeds": len(group)}
        row.update({m: cell(group, m) for m in metrics})
        rows.append(row)
    return pd.DataFrame(rows)


SETTINGS = {"model": "model", "loss": "loss", "nets": "nets", "epochs": "epochs", "g_updates": "G updates",
            "batch_size": "batch size", "num_train_images": "training images", "seed": "seeds", "lr": "lr G / D",
            "betas": "Adam betas G / D", "z": "z", "other_settings": "other settings"}
COUNTED = ("g_updates", "num_train_images")  # what train.json counted, listed per distinct value


def settings_table(summary: pd.DataFrame) -> pd.DataFrame:
    """What the runs were trained with, one row per variant, data and configuration (its seeds
    listed): the numbers a page quotes come from here, not from a study's free text."""
    config = [c for c in SETTINGS if c in summary and c not in COUNTED and c != "seed"]
    rows = []
    for values, group in summary.groupby(["variant", DATA, *config], sort=True, dropna=False):
        row = {"variant": values[0], "data": values[1], **dict(zip(config, values[2:]))}
        row.update({c: " / ".join(_count(v) for v in sorted(group[c].unique(), key=_numbers_first))
                    for c in COUNTED if c in group})
        row["seed"] = ", ".join(str(s) for s in sorted(group["seed"]))
        rows.append(row)
    frame = pd.DataFrame(rows)
    return frame[["variant", "data", *(c for c in SETTINGS if c in frame)]].rename(columns=SETTINGS)


def _numbers_first(value) -> tuple:
    return (1, 0, str(value)) if isinstance(value, str) or value != value else (0, value, "")


def _count(value) -> str:
    if isinstance(value, str):
        return value
    return "not recorded" if value is None or value != value else f"{int(value):,}"


def markdown_table(frame: pd.DataFrame) -> str:
    def fmt(v):
        if isinstance(v, float):
            return "n/a" if math.isnan(v) else f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def comparison_sections(frame: pd.DataFrame, by: str) -> list[str]:
    """The generic comparison of a study's runs grouped by `by` (loss or variant): every metric
    per group, pairwise differences of the headline IS and FID (and the near-duplicate rate),
    and the K+1 discriminator's accuracy where such runs exist."""
    parts = []
    metrics = [m for m in metric_columns(frame) if m.split("_")[0] in ("fid", "is", "kid")]
    metrics += [f"best_{m}" for m in metrics if f"best_{m}" in frame]
    metrics += [m for m in ("confidence", "near_dup_rate") if m in frame and frame[m].notna().all()]
    parts.append(f"### Per {by} (mean [95% t-interval] over seeds)\n\n"
                 f"{markdown_table(group_table(frame, metrics, by))}\n")
    for column in [headline_metric(frame, "is"), headline_metric(frame, "fid"),
                   "near_dup_rate" if "near_dup_rate" in frame else None]:
        if column and frame[column].notna().any():  # a column other studies filled
            parts.append(f"### Pairwise differences of {column} by {by}\n\n"
                         f"{markdown_table(pairwise_table(frame, column, by))}\n")
    if "ssl_acc" in frame and frame["ssl_acc"].notna().any():
        parts.append("### Semi-supervised K+1 discriminator: test accuracy (mean [95% t-interval] over "
                     f"seeds; gain paired by seed)\n\n{markdown_table(ssl_table(frame))}\n")
    return parts

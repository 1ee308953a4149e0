"""ProjectedGAN few-shot study: how much sooner than a DCGAN does a GAN that discriminates in a
frozen pretrained network's features reach the DCGAN's best FID."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from pipeline.report.plots import data_caption, save_figure
from pipeline.report.tables import markdown_table
from pipeline.report.studies.base import StudyReport


def time_to_fid(summary: pd.DataFrame, history: pd.DataFrame, baseline_model: str = "dcgan") -> pd.DataFrame:
    """Per run: the training time (and images seen) at which its per-epoch FID first reaches the
    best FID any `baseline_model` run ever reached, and the baseline's own time to that FID."""
    base = history[history["model"] == baseline_model].dropna(subset=["fid_cheap"])
    if base.empty:
        return pd.DataFrame()
    target = float(base["fid_cheap"].min())
    baseline_time = float(base.loc[base["fid_cheap"].idxmin(), "train_time_s"])
    rows = []
    for experiment, runs in history.dropna(subset=["fid_cheap"]).groupby("experiment", sort=True):
        reached = runs[runs["fid_cheap"] <= target]
        first = reached.iloc[0] if len(reached) else None
        rows.append({"experiment": experiment, "variant": runs["variant"].iloc[0], "best fid_cheap": runs["fid_cheap"].min(),
                     "time to target (s)": float(first["train_time_s"]) if first is not None else math.nan,
                     "images seen": float(first["images_seen"]) if first is not None else math.nan,
                     "speed-up vs best baseline": baseline_time / float(first["train_time_s"]) if first is not None else math.nan})
    table = pd.DataFrame(rows)
    table.attrs.update(target=target, baseline_time=baseline_time)
    return table


def plot_fid_over_time(study: str, history: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Per-epoch FID against training wall-clock and against real images seen, one line per variant."""
    made = []
    runs = history.dropna(subset=["fid_cheap"])
    for x, label in (("train_time_s", "training time (s, metrics excluded)"), ("images_seen", "real images seen by D")):
        if x not in runs:
            continue
        fig, ax = plt.subplots(figsize=(6.5, 4))
        sns.lineplot(data=runs, x=x, y="fid_cheap", hue="variant", units="experiment", estimator=None, ax=ax, alpha=0.8,
                     marker="o")  # a one-epoch run is a single point
        ax.set_xlabel(label)
        ax.set_ylabel("FID (cheap extractor)")
        ax.set_title(f"{study}: FID vs {label.split(' (')[0]}\n{data_caption(runs)}", fontsize=9)
        made.append(save_figure(fig, out_dir / f"{study}_fid_vs_{x}.png"))
    return made


def time_to_fid_section(study: str, frame: pd.DataFrame, in_study: dict[str, pd.DataFrame],
                        plots_dir: Path) -> tuple[list[str], list[Path]]:
    """The time-to-target table (where a DCGAN run has an FID to aim at) and FID over time."""
    parts = []
    table = time_to_fid(frame, in_study["history"])
    if not table.empty:
        parts.append(
            f"### Time to the best DCGAN FID\n\nTarget: FID {table.attrs['target']:.4g}, the best per-epoch "
            f"FID of any DCGAN run, reached by it after {table.attrs['baseline_time']:.4g} s of training. "
            "FID here is the cheap extractor's; with `effnet` it is measured in the feature space of the "
            "projector's own backbone family, which flatters ProjectedGAN: compare with Inception FID "
            "where the weights are available. Times are those of the first evaluation at or below the "
            "target (resolution: `eval_every`); n/a: never reached."
            f"\n\n{markdown_table(table)}\n")
    return parts, plot_fid_over_time(study, in_study["history"], plots_dir)


REPORT = StudyReport(extra=time_to_fid_section)

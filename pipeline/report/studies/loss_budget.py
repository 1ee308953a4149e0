"""Loss-budget sweeps (pipeline.core.sweeps), read as Lucic et al. (2018) read theirs: per loss, the
lowest FID reached within the first k random hyperparameter draws (k = 1..N), with a 95% band over
random orderings of the draws; the FID over all draws and the share that diverged; the best
draw's setting; the seed-to-seed spread of one fixed setting (the study's runs outside any sweep)
for scale; and whether one loss is lower at every budget or the curves meet."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from pipeline.core.extractors import quoted_first
from pipeline.report.plots import data_caption, save_figure
from pipeline.report.stats import DATA, sd
from pipeline.report.studies.base import StudyReport
from pipeline.report.tables import markdown_table

ORDERINGS = 1000  # random orderings of the draws behind each band
SETTINGS = ("lr", "betas", "batch_size", "n_critic")  # the drawn values as the settings table shows them


def fid_column(runs: pd.DataFrame) -> str | None:
    """The FID the report quotes (inception, else effnet, else the dataset classifier's) that some draw has."""
    return next((f"fid_{x}" for x in quoted_first() if f"fid_{x}" in runs and runs[f"fid_{x}"].notna().any()), None)


def budget_curves(draws: pd.DataFrame, fid: str, orderings: int = ORDERINGS, seed: int = 0) -> pd.DataFrame:
    """Per sweep and loss, for k = 1..N draws: the median and 2.5 / 97.5 percentiles, over random
    orderings of the draws, of the lowest FID among the first k. A diverged draw (no FID) never is
    the lowest (inf until a draw that trained). The losses of a sweep share their orderings: draw
    NN is the same setting for each."""
    rows = []
    rng = np.random.default_rng(seed)
    for sweep, in_sweep in draws.groupby("sweep", sort=True):
        n = int(in_sweep["draw"].max()) + 1
        order = np.argsort(rng.random((orderings, n)), axis=1)
        for loss, runs in in_sweep.groupby("loss", sort=True):
            by_draw = runs.set_index("draw")[fid].reindex(range(n)).to_numpy(float)
            by_draw = np.where(np.isfinite(by_draw), by_draw, np.inf)
            lowest = np.minimum.accumulate(by_draw[order], axis=1)
            for k in range(n):
                low, median, high = np.percentile(lowest[:, k], [2.5, 50, 97.5], method="inverted_cdf")  # no inf - inf
                rows.append({"sweep": sweep, "loss": loss, "draws": k + 1, "median": median, "low": low, "high": high})
    return pd.DataFrame(rows)


def draw_table(draws: pd.DataFrame, fid: str) -> pd.DataFrame:
    """Per sweep and loss: draws, share diverged, the FID's median over the draws that trained, the
    best FID and the setting of the draw that reached it."""
    rows = []
    for (sweep, loss), runs in draws.groupby(["sweep", "loss"], sort=True):
        trained = runs.dropna(subset=[fid])
        best = trained.loc[trained[fid].idxmin()] if len(trained) else None
        rows.append({"sweep": sweep, "loss": loss, "draws": len(runs), "diverged": 1 - len(trained) / len(runs),
                     f"median {fid}": trained[fid].median() if len(trained) else math.nan,
                     f"best {fid}": best[fid] if best is not None else math.nan,
                     "best draw": int(best["draw"]) if best is not None else "none trained",
                     **{k: (best[k] if best is not None and k in best else "") for k in SETTINGS}})
    return pd.DataFrame(rows)


def seed_spread(fixed: pd.DataFrame, fid: str) -> float | None:
    """The pooled standard deviation over seeds of the study's fixed-setting runs (per loss, then
    pooled), None without two seeds of one setting."""
    groups = [g[fid].dropna() for _, g in fixed.groupby(["variant", "loss"])]
    groups = [g for g in groups if len(g) >= 2]
    if not groups:
        return None
    dof = sum(len(g) - 1 for g in groups)
    return math.sqrt(sum((len(g) - 1) * sd(g) ** 2 for g in groups) / dof)


def verdict(curves: pd.DataFrame, spread: float | None) -> str:
    """One sweep's answer to "is one loss better at every budget, or do the curves meet?"."""
    full = curves[curves["draws"] == curves["draws"].max()].set_index("loss")["median"]
    if not np.isfinite(full).any():
        return "no loss trained in any draw: no answer"
    best = full.idxmin()
    others = curves[curves["loss"] != best]
    mine = curves[curves["loss"] == best].set_index("draws")
    apart = all(mine.loc[k, "high"] < others[others["draws"] == k]["low"].min() for k in mine.index if k >= 2)
    lowest_everywhere = all(mine.loc[k, "median"] <= others[others["draws"] == k]["median"].min() for k in mine.index)
    gaps = (full.drop(best) - full[best]).sort_values()
    gap_text = ", ".join(f"{loss} +{gap:.3g}" for loss, gap in gaps.items())
    if spread is None:
        scale = ("no fixed setting was run over seeds, so whether these gaps exceed seed-to-seed noise cannot be "
                 "told (add runs of one setting with 3+ seeds to the study)")
    elif (gaps <= 2 * spread).all():
        return (f"the curves meet: with all {int(curves['draws'].max())} draws every loss's best FID is within two "
                f"seed standard deviations ({2 * spread:.3g}) of {best}'s ({gap_text})")
    else:
        scale = f"two seed standard deviations are {2 * spread:.3g}"
    if lowest_everywhere and apart:
        return f"{best} is lower at every budget (its band is below every other loss's from 2 draws on; {gap_text}); {scale}"
    return f"{best} is lowest with all draws ({gap_text}) but not at every budget; {scale}"


def plot_budget(study: str, curves: pd.DataFrame, runs: pd.DataFrame, fid: str, out_dir: Path) -> list[Path]:
    made = []
    for sweep, in_sweep in curves.groupby("sweep", sort=True):
        fig, ax = plt.subplots(figsize=(6.5, 4))
        palette = dict(zip(sorted(in_sweep["loss"].unique()), sns.color_palette(n_colors=in_sweep["loss"].nunique())))
        for loss, line in in_sweep.groupby("loss", sort=True):
            shown = line.replace([np.inf], np.nan)
            ax.plot(shown["draws"], shown["median"], marker="o", label=loss, color=palette[loss])
            ax.fill_between(shown["draws"], shown["low"], shown["high"], alpha=0.2, color=palette[loss])
        ax.set_xlabel("hyperparameter draws (budget)")
        ax.set_ylabel(f"lowest {fid} so far")
        ax.legend(fontsize=8)
        ax.set_title(f"{study} / {sweep}: best FID vs budget (median, 95% over {ORDERINGS} orderings)\n"
                     f"{data_caption(runs[runs['sweep'] == sweep])}", fontsize=9)
        made.append(save_figure(fig, out_dir / f"{study}_{sweep}_budget.png"))
    return made


def budget_section(study: str, frame: pd.DataFrame, in_study: dict[str, pd.DataFrame],
                   plots_dir: Path) -> tuple[list[str], list[Path]]:
    draws = frame[frame["sweep"].notna()] if "sweep" in frame else frame.iloc[0:0]
    fid = fid_column(draws)
    if draws.empty or fid is None:
        return ["## Budget curves\n\nNo sweep runs with an FID in this study yet."], []
    curves = budget_curves(draws, fid)
    fixed = frame[frame["sweep"].isna()]
    # each sweep's scale is the seed spread of the same nets on the same data: FIDs of other nets or
    # data are on another scale
    spreads = {sweep: seed_spread(fixed[(fixed["model"] == runs["model"].iloc[0]) & (fixed[DATA] == runs[DATA].iloc[0])], fid)
               for sweep, runs in draws.groupby("sweep", sort=True)}
    parts = ["## Budget curves (Lucic et al. 2018's protocol)\n",
             f"Per loss, the lowest {fid} reached within the first k of its random hyperparameter draws "
             f"(median and 95% band over {ORDERINGS} random orderings of the draws; a diverged draw never counts). "
             "Every loss of a sweep had the same draws.\n"]
    for sweep, in_sweep in curves.groupby("sweep", sort=True):
        parts.append(f"* **{sweep}**: {verdict(in_sweep, spreads[sweep])}.")
    parts += ["", "Lucic et al. found, on their data and nets, that with enough budget most losses reach similar "
              "FID and none beats the non-saturating loss consistently; these runs are other data, nets and "
              "budgets, so only the shape of the comparison carries over.\n",
              "### Each loss's draws\n", markdown_table(draw_table(draws, fid)),
              f"\nSeed-to-seed spread of one fixed setting (the study's runs outside the sweeps with the sweep's "
              f"nets and data; pooled standard deviation of {fid}): "
              + "; ".join(f"{sweep} {spread:.3g}" if spread is not None else f"{sweep} not measured"
                          for sweep, spread in spreads.items()) + "\n"]
    return parts, plot_budget(study, curves, draws, fid, plots_dir)


REPORT = StudyReport(extra=budget_section)

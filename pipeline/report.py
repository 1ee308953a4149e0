"""Aggregate every experiment into results/summary.csv, seaborn plots per study and report.md."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: files only
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from pipeline.config import Params, resolve_experiment  # noqa: E402
from pipeline.train import RunPaths  # noqa: E402

ID_COLUMNS = ["experiment", "study", "model", "dataset", "loss", "seed", "epochs"]


def collect(params: Params, runs_root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(summary: one row per experiment, history: one row per experiment and epoch)."""
    rows, histories = [], []
    for name in params.experiments:
        cfg = resolve_experiment(params, name)
        paths = RunPaths(runs_root / name)
        metrics_file = paths.root / "metrics.json"
        if not metrics_file.exists():
            raise FileNotFoundError(f"{metrics_file} missing: run `dvc repro evaluate@{name}` first")
        train = json.loads(paths.summary.read_text())
        ids = {"experiment": name, "study": cfg.study, "model": cfg.model, "dataset": cfg.dataset,
               "loss": cfg.loss, "seed": cfg.seed, "epochs": cfg.epochs}
        rows.append({**ids, **json.loads(metrics_file.read_text()), "train_time_s": train["train_time_s"]})
        history = pd.read_csv(paths.history)
        histories.append(history.assign(**{k: v for k, v in ids.items() if k != "epochs"}))
    summary = pd.DataFrame(rows)
    history = pd.concat(histories, ignore_index=True) if histories else pd.DataFrame()
    return summary, history


def metric_columns(summary: pd.DataFrame) -> list[str]:
    """Final-checkpoint metrics present for every run (e.g. fid_effnet, is_effnet, kid_effnet)."""
    return [c for c in summary.columns if c.split("_")[0] in ("fid", "is", "kid") and summary[c].notna().all()]


def plot_study(study: str, summary: pd.DataFrame, history: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Per study: cheap FID and D(G(z)) over epochs by loss; each final metric by loss with a 95% CI
    over seeds (one point per seed when a configuration has a single seed)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    made = []
    hue = "loss"
    style = "model" if summary["model"].nunique() > 1 else None
    cols = "dataset" if summary["dataset"].nunique() > 1 else None
    for y, label in (("fid_cheap", "FID (cheap, per epoch)"), ("d_fake", "mean D(G(z))"), ("g_grad_norm", "G grad norm")):
        if y not in history or history[y].isna().all():
            continue
        grid = sns.relplot(data=history.dropna(subset=[y]), x="epoch", y=y, hue=hue, style=style, col=cols,
                           kind="line", errorbar=("ci", 95), markers=True, height=3.5, aspect=1.3)
        grid.set_axis_labels("epoch", label)
        grid.figure.suptitle(f"{study}: {label}", y=1.03)
        made.append(_save(grid.figure, out_dir / f"{study}_{y}_vs_epoch.png"))
    for metric in metric_columns(summary):
        grid = sns.catplot(data=summary, x="loss", y=metric, hue=style or "loss", col=cols, kind="point",
                           errorbar=("ci", 95), capsize=0.15, height=3.5, aspect=1.2, dodge=0.3)
        for ax in grid.axes.flat:  # one dot per seed, so the spread stays visible with few seeds
            sub = summary if cols is None else summary[summary[cols] == ax.get_title().split(" = ")[-1]]
            sns.stripplot(data=sub, x="loss", y=metric, ax=ax, color="black", size=4, alpha=0.5,
                          order=[t.get_text() for t in ax.get_xticklabels()])
        grid.figure.suptitle(f"{study}: final {metric} (95% CI over seeds)", y=1.03)
        made.append(_save(grid.figure, out_dir / f"{study}_{metric}_by_loss.png"))
    return made


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def markdown_table(frame: pd.DataFrame) -> str:
    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def write_report(params: Params, runs_root: Path, results_dir: Path) -> pd.DataFrame:
    summary, history = collect(params, runs_root)
    results_dir.mkdir(parents=True, exist_ok=True)
    summary.to_csv(results_dir / "summary.csv", index=False)
    plots_dir = results_dir / "plots"
    sections = [f"# ganlab report\n\nProfile: `{params.profile}`. One row per experiment; unprefixed "
                "metrics are the final checkpoint's, `best_` ones the checkpoint with the lowest cheap FID "
                "during training. Lower FID / KID is better, higher IS is better.\n"]
    for study, frame in summary.groupby("study", sort=True):
        shown = [c for c in [*ID_COLUMNS, *metric_columns(frame), "best_epoch", "train_time_s"] if c in frame]
        sections.append(f"## Study `{study}`\n\n{markdown_table(frame[shown])}\n")
        for plot in plot_study(study, frame, history[history["study"] == study], plots_dir):
            sections.append(f"![{plot.stem}](plots/{plot.name})\n")
    (results_dir / "report.md").write_text("\n".join(sections))
    return summary

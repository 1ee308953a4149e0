"""Aggregate every experiment into results/summary.csv, seaborn plots per study and report.md.

Intervals in tables are 95% Student-t intervals of the mean over seeds (mean +- t * s / sqrt(n));
the seaborn plots draw seaborn's bootstrap 95% interval over seeds.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: files only
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from scipy import stats  # noqa: E402

from pipeline.config import Params, resolve_experiment  # noqa: E402
from pipeline.train import RunPaths  # noqa: E402

ID_COLUMNS = ["experiment", "study", "variant", "model", "dataset", "num_classes", "loss", "seed", "epochs"]
CLASS_METRICS = ("cond_acc", "classes_covered", "class_entropy_norm", "fid_classifier")


def collect(params: Params, runs_root: Path) -> dict[str, pd.DataFrame]:
    """summary (one row per experiment), history (per epoch), steps (per logged iteration),
    per_class (conditional accuracy per class and experiment)."""
    rows, histories, steps, per_class = [], [], [], []
    for name in params.experiments:
        cfg = resolve_experiment(params, name)
        paths = RunPaths(runs_root / name)
        metrics_file = paths.root / "metrics.json"
        if not metrics_file.exists():
            raise FileNotFoundError(f"{metrics_file} missing: run `dvc repro evaluate@{name}` first")
        train = json.loads(paths.summary.read_text())
        classes = json.loads((paths.root / "classes.json").read_text())
        ids = {"experiment": name, "study": cfg.study, "variant": cfg.variant_label(), "model": cfg.model,
               "dataset": cfg.dataset, "num_classes": len(classes["classes"]), "loss": cfg.loss, "seed": cfg.seed,
               "epochs": cfg.epochs}
        rows.append({**ids, **json.loads(metrics_file.read_text()), "train_time_s": train["train_time_s"]})
        tag = {k: v for k, v in ids.items() if k != "epochs"}
        histories.append(pd.read_csv(paths.history).assign(**tag))
        if paths.steps.stat().st_size > 10:
            steps.append(pd.read_csv(paths.steps).assign(**tag))
        accuracies = (classes.get("checkpoint") or {}).get("cond_acc_per_class")
        if accuracies:
            per_class += [{**tag, "class": c, "class_index": i, "cond_acc": a}
                          for i, (c, a) in enumerate(zip(classes["classes"], accuracies))]
    frames = {"summary": rows, "history": histories, "steps": steps, "per_class": per_class}
    return {k: (pd.concat(v, ignore_index=True) if v and isinstance(v[0], pd.DataFrame) else pd.DataFrame(v))
            for k, v in frames.items()}


def metric_columns(summary: pd.DataFrame) -> list[str]:
    """Final-checkpoint metrics present for every run (e.g. fid_effnet, is_effnet, cond_acc)."""
    scalar = ("fid", "is", "kid", "cond", "classes", "class")
    return [c for c in summary.columns if c.split("_")[0] in scalar and summary[c].notna().all()]


def mean_ci(values) -> tuple[float, float, float]:
    """Mean and 95% Student-t interval; a single value has no interval (nan)."""
    v = np.asarray(values, dtype=float)
    mean = float(v.mean())
    if len(v) < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return mean, mean - half, mean + half


def fmt_ci(mean: float, lo: float, hi: float) -> str:
    return f"{mean:.3g}" if math.isnan(lo) else f"{mean:.3g} [{lo:.3g}, {hi:.3g}]"


def plot_study(study: str, summary: pd.DataFrame, history: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Per study: cheap FID, D(G(z)) and G's gradient norm over epochs by loss; each final metric
    by loss with a 95% interval over seeds (one dot per seed, so few seeds stay visible)."""
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
    for metric in [m for m in metric_columns(summary) if m.split("_")[0] in ("fid", "is", "kid")]:
        grid = sns.catplot(data=summary, x="loss", y=metric, hue=style or "loss", col=cols, kind="point",
                           errorbar=("ci", 95), capsize=0.15, height=3.5, aspect=1.2,
                           dodge=_dodge(summary, style or "loss"))
        for ax in grid.axes.flat:
            sub = summary if cols is None else summary[summary[cols] == ax.get_title().split(" = ")[-1]]
            sns.stripplot(data=sub, x="loss", y=metric, ax=ax, color="black", size=4, alpha=0.5,
                          order=[t.get_text() for t in ax.get_xticklabels()])
        grid.figure.suptitle(f"{study}: final {metric} (95% CI over seeds)", y=1.03)
        made.append(_save(grid.figure, out_dir / f"{study}_{metric}_by_loss.png"))
    return made


def plot_class_study(study: str, summary: pd.DataFrame, steps: pd.DataFrame, per_class: pd.DataFrame,
                     out_dir: Path) -> list[Path]:
    """Class-conditional view: each class metric vs number of classes (one line per variant, 95%
    interval over seeds), D's class loss on real vs generated images over iterations, and the
    per-class conditional accuracy of the runs with the most classes."""
    out_dir.mkdir(parents=True, exist_ok=True)
    made = []
    for metric in [m for m in CLASS_METRICS if m in summary and summary[m].notna().any()]:
        fig, ax = plt.subplots(figsize=(6, 4))
        sns.pointplot(data=summary, x="num_classes", y=metric, hue="variant", errorbar=("ci", 95), capsize=0.1,
                      dodge=_dodge(summary, "variant"), ax=ax)
        if metric == "cond_acc":
            for n in sorted(summary["num_classes"].unique()):
                ax.axhline(1 / n, color="grey", lw=0.6, ls=":")
        ax.set_title(f"{study}: {metric} vs number of classes (95% CI over seeds; dotted: chance)")
        made.append(_save(fig, out_dir / f"{study}_{metric}_vs_classes.png"))
    if not steps.empty and "cls_real" in steps:
        long = steps.dropna(subset=["cls_real"]).melt(
            id_vars=["step", "variant", "num_classes", "seed"], value_vars=["cls_real", "cls_fake"],
            var_name="images", value_name="class_loss")
        grid = sns.relplot(data=long, x="step", y="class_loss", hue="variant", style="images", col="num_classes",
                           kind="line", errorbar=("ci", 95), height=3.5, aspect=1.3, facet_kws={"sharex": False})
        grid.set(yscale="log")
        grid.figure.suptitle(f"{study}: D's class loss on real vs generated images", y=1.03)
        made.append(_save(grid.figure, out_dir / f"{study}_class_loss_vs_step.png"))
    if not per_class.empty:
        most = per_class[per_class["num_classes"] == per_class["num_classes"].max()]
        table = most.groupby(["variant", "class_index", "class"])["cond_acc"].mean().reset_index()
        heat = table.pivot(index="variant", columns="class_index", values="cond_acc")
        names = table.drop_duplicates("class_index").set_index("class_index")["class"]
        fig, ax = plt.subplots(figsize=(max(6, 0.32 * heat.shape[1] + 2), 0.5 * heat.shape[0] + 1.5))
        sns.heatmap(heat, vmin=0, vmax=1, cmap="viridis", ax=ax, cbar_kws={"label": "conditional accuracy"},
                    xticklabels=[names[i] for i in heat.columns])
        ax.set_xlabel("requested class")
        ax.set_title(f"{study}: per-class conditional accuracy, {int(most['num_classes'].iloc[0])} classes (mean over seeds)")
        _cjk_font(ax)
        made.append(_save(fig, out_dir / f"{study}_per_class_accuracy.png"))
    return made


def _cjk_font(ax) -> None:
    """Use a font with kana for tick labels when one is installed (Kuzushiji class names)."""
    from matplotlib import font_manager

    for name in ("Noto Sans CJK JP", "Noto Sans JP", "IPAGothic", "TakaoGothic", "Droid Sans Fallback"):
        if any(f.name == name for f in font_manager.fontManager.ttflist):
            for label in ax.get_xticklabels():
                label.set_fontname(name)
            return


def class_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Mean [95% interval] of each class metric per variant and number of classes."""
    metrics = [m for m in CLASS_METRICS if m in summary and summary[m].notna().any()]
    rows = []
    for (variant, n), group in summary.groupby(["variant", "num_classes"], sort=True):
        row = {"variant": variant, "num_classes": n, "seeds": len(group)}
        row.update({m: fmt_ci(*mean_ci(group[m])) for m in metrics})
        rows.append(row)
    return pd.DataFrame(rows)


def acgan_findings(summary: pd.DataFrame) -> list[str]:
    """The write-up's claims, checked against the measured conditional accuracy and coverage.

    Claims: ACGAN works with 5 classes, about half the labels work with 10, it fails (wrong
    glyphs, few modes) with 49; a cGAN with the same networks does better. 'Works' is read as
    conditional accuracy >= 0.8, 'fails' as < 0.3; each statement quotes the numbers."""
    lines = []

    def stat(variant: str, n: int, metric: str):
        """Mean and interval of `metric` over the seeds of a variant ('cgan' = any cGAN) at n classes."""
        chosen = summary["model"] == "cgan" if variant == "cgan" else summary["variant"] == variant
        rows = summary[chosen & (summary["num_classes"] == n)]
        return (mean_ci(rows[metric]), len(rows)) if len(rows) else (None, 0)

    classes = sorted(summary["num_classes"].unique())
    for n in classes:
        (acgan, k), (cgan, kc) = stat("acgan/minimax", n, "cond_acc"), stat("cgan", n, "cond_acc")
        if acgan is None:
            continue
        verdict = "works" if acgan[0] >= 0.8 else ("fails" if acgan[0] < 0.3 else "works partly")
        line = (f"* {n} classes: ACGAN (as written: saturating G loss) conditional accuracy "
                f"{fmt_ci(*acgan)} over {k} seed(s), chance {1 / n:.3f}: it {verdict}.")
        if cgan is not None:
            better = "better" if cgan[0] > acgan[0] else "not better"
            line += f" cGAN: {fmt_ci(*cgan)} ({kc} seed(s)), {better} than ACGAN."
        cover = stat("acgan/minimax", n, "classes_covered")[0]
        if cover is not None:
            line += f" ACGAN samples cover {cover[0]:.1f} of {n} classes."
        lines.append(line)
    for n in classes:
        plain, pre, ns = (stat(v, n, "cond_acc")[0] for v in ("acgan/minimax", "acgan/minimax+pretrain", "acgan/non_saturating"))
        if plain is not None and pre is not None:
            lines.append(f"* {n} classes, D pre-training: {fmt_ci(*pre)} vs {fmt_ci(*plain)} without.")
        if plain is not None and ns is not None:
            lines.append(f"* {n} classes, non-saturating instead of the write-up's saturating G loss: "
                         f"{fmt_ci(*ns)} vs {fmt_ci(*plain)}.")
    return lines


def _dodge(frame: pd.DataFrame, hue: str) -> float | bool:
    """Side-by-side offset for several hue levels (seaborn divides by levels - 1)."""
    return 0.3 if frame[hue].nunique() > 1 else False


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
    frames = collect(params, runs_root)
    summary = frames["summary"]
    results_dir.mkdir(parents=True, exist_ok=True)
    summary.to_csv(results_dir / "summary.csv", index=False)
    plots_dir = results_dir / "plots"
    sections = [f"# ganlab report\n\nProfile: `{params.profile}`. One row per experiment; unprefixed "
                "metrics are the final checkpoint's, `best_` ones the checkpoint with the lowest cheap FID "
                "during training. Lower FID / KID is better, higher IS is better. `cond_acc`: share of "
                "generated images the dataset classifier assigns to the requested class (mean over classes); "
                "`classes_covered`: classes receiving at least 1/(2N) of the samples.\n"]
    for study, frame in summary.groupby("study", sort=True):
        shown = [c for c in [*ID_COLUMNS, *metric_columns(frame), "best_epoch", "train_time_s"] if c in frame]
        sections.append(f"## Study `{study}`\n\n{markdown_table(frame[shown])}\n")
        in_study = {k: (v[v["study"] == study] if not v.empty else v) for k, v in frames.items() if k != "summary"}
        plots = plot_study(study, frame, in_study["history"], plots_dir)
        if "cond_acc" in frame and frame["cond_acc"].notna().any():
            sections.append("### By number of classes (mean [95% t-interval] over seeds)\n\n"
                            f"{markdown_table(class_table(frame))}\n")
            if study == "acgan_classes":
                sections.append("### The write-up's claims\n\n" + "\n".join(acgan_findings(frame)) + "\n")
            plots += plot_class_study(study, frame, in_study["steps"], in_study["per_class"], plots_dir)
        sections += [f"![{plot.stem}](plots/{plot.name})\n" for plot in plots]
    (results_dir / "report.md").write_text("\n".join(sections))
    return summary

"""Aggregate every experiment into results/summary.csv, seaborn plots per study and report.md.

Intervals in tables are 95% Student-t intervals of the mean over seeds (mean +- t * s / sqrt(n));
differences between two losses use Welch's t interval and test (unequal variances, Welch-
Satterthwaite degrees of freedom). The plots of final metrics draw the same t-intervals;
curves over epochs / iterations draw the mean over seeds with a band from the lowest to the
highest seed (a bootstrap per point of a few seeds says nothing more and
costs minutes).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: files only
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from pipeline.config import Params, resolve_experiment  # noqa: E402
from pipeline.layout import GRID_MAX_ROWS  # noqa: E402
from pipeline.rundir import RunDir  # noqa: E402
from pipeline.stats import DATA, fmt_ci, headline_metric, mean_ci, t_errorbar, welch  # noqa: E402

CURVE_BAND = ("pi", 100)  # curves: min-max over seeds around the mean
ID_COLUMNS = ["experiment", "study", "variant", "model", "nets", "data_label", "num_classes", "loss", "seed", "epochs"]
CLASS_METRICS = ("cond_acc", "classes_covered", "class_entropy_norm", "fid_classifier")


def data_label(dataset: str, stands_in_for: str | None) -> str:
    return f"{dataset} (stand-in for {stands_in_for})" if stands_in_for else dataset


def data_caption(frame: pd.DataFrame) -> str:
    """'data: <label>, ...' for a plot title: which data the curves come from, stand-ins named."""
    return "data: " + "; ".join(sorted(frame[DATA].unique()))


def measured_by_classifier(metric: str) -> bool:
    """Metrics only as good as the dataset classifier behind them."""
    base = metric.removeprefix("best_")
    return base.endswith("_classifier") or base in ("cond_acc", "classes_covered", "class_entropy", "class_entropy_norm",
                                                    "confidence", "confident_classes")


def collect(params: Params, runs_root: Path) -> dict[str, pd.DataFrame]:
    """summary (one row per experiment), history (per epoch), steps (per logged iteration),
    per_class (conditional accuracy per class and experiment)."""
    rows, histories, steps, per_class, missing = [], [], [], [], []
    for name in params.experiments:
        cfg = resolve_experiment(params, name)
        paths = RunDir.of(name, runs_root)
        why_not = run_not_reportable(paths, cfg)
        if why_not:  # listed in the report, never read half
            missing.append(f"{name} ({why_not})")
            continue
        train = json.loads(paths.summary.read_text())
        classes = json.loads(paths.classes.read_text())
        metrics = json.loads(paths.metrics.read_text())
        ids = {"experiment": name, "study": cfg.study, "variant": cfg.variant_label(), "model": cfg.model,
               "nets": ", ".join(f"{k}={v}" for k, v in sorted(cfg.model_args.items())),
               "dataset": cfg.dataset, DATA: data_label(cfg.dataset, metrics.get("stands_in_for")),
               "num_classes": len(classes["classes"]), "loss": cfg.loss, "seed": cfg.seed, "epochs": cfg.epochs}
        grids = paths.grids()
        rows.append({**metrics, **ids, "train_time_s": train["train_time_s"], "wall_time_s": train.get("wall_time_s"),
                     "code_version": train.get("code_version"), "machine": train.get("machine"),
                     "num_train_images": train.get("num_train_images"),
                     # which extractor and which real images chose the best_ checkpoint
                     "best_selected_by": train.get("cheap_extractor"), "best_reference": train.get("cheap_reference"),
                     "final_grid": str(grids[-1]) if grids else ""})
        tag = {k: v for k, v in ids.items() if k != "epochs"}
        histories.append(pd.read_csv(paths.history).assign(**tag))
        if paths.steps.stat().st_size > 10:
            steps.append(pd.read_csv(paths.steps).assign(**tag))
        accuracies = (classes.get("checkpoint") or {}).get("cond_acc_per_class")
        if accuracies:
            per_class += [{**tag, "class": c, "class_index": i, "cond_acc": a}
                          for i, (c, a) in enumerate(zip(classes["classes"], accuracies))]
    if not rows:
        raise FileNotFoundError(f"no experiment has been evaluated yet under {runs_root}: run `dvc repro` first")
    frames = {"summary": rows, "history": histories, "steps": steps, "per_class": per_class}
    out = {k: (pd.concat(v, ignore_index=True) if v and isinstance(v[0], pd.DataFrame) else pd.DataFrame(v))
           for k, v in frames.items()}
    out["summary"].attrs["missing"] = missing
    return out


def run_not_reportable(paths: RunDir, cfg) -> str | None:
    """Why a run directory cannot be reported (None when it can): not evaluated yet (a partial
    `dvc repro`), training outputs gone (a re-run that failed: DVC removes them first), trained
    with other settings than the experiment's now (params.yaml edited, not re-run), diverged (a
    failed run, listed with its error), or metrics of an earlier training than the one on disk
    (re-trained, not re-evaluated)."""
    if not paths.metrics.exists():
        return "not evaluated"
    if not (paths.summary.exists() and paths.history.exists() and paths.classes.exists()):
        return "training outputs missing: its last training failed or was interrupted"
    train = json.loads(paths.summary.read_text())
    other_settings = "trained with other settings than params.yaml's: run its train and evaluate stages"
    if train.get("fingerprint", cfg.fingerprint()) != cfg.fingerprint():
        return other_settings
    if train.get("status") == "diverged":
        return f"failed: {train['error']}"
    if train["epochs"] != cfg.epochs:
        return other_settings
    evaluated = json.loads(paths.metrics.read_text()).get("train_run_id")
    if evaluated and evaluated != train.get("mlflow_run_id"):
        return "re-trained since its evaluation: run its evaluate stage"  # (by content: DVC checkouts reset mtimes)
    return None


def metric_columns(summary: pd.DataFrame) -> list[str]:
    """Final-checkpoint metrics present for every run (e.g. fid_effnet, is_effnet, cond_acc)."""
    scalar = ("fid", "is", "kid", "cond", "classes", "class")
    return [c for c in summary.columns if c.split("_")[0] in scalar and summary[c].notna().all()]


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


PER_EPOCH_CURVES = (("fid_cheap", "FID (cheap extractor, per epoch)"), ("is_cheap", "IS (cheap extractor, per epoch)"),
                    ("cond_acc_cheap", "conditional accuracy (per epoch)"),
                    ("confidence_cheap", "classifier confidence (per epoch)"),
                    ("d_fake", "mean D(G(z))"), ("g_grad_norm", "G grad norm"))
LOG_SCALE_CURVES = ("fid_cheap", "g_grad_norm")  # span orders of magnitude over training


def plot_study(study: str, summary: pd.DataFrame, history: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Per study: PER_EPOCH_CURVES over epochs by loss (by variant where the study has one loss);
    each final metric by loss with a 95% interval over seeds (one dot per seed, so few seeds stay
    visible)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    made = []
    hue, style = line_keys(summary)
    cols = DATA if summary[DATA].nunique() > 1 else None
    for y, label in PER_EPOCH_CURVES:
        if y not in history or history[y].isna().all():
            continue
        grid = sns.relplot(data=history.dropna(subset=[y]), x="epoch", y=y, hue=hue, style=style, col=cols,
                           kind="line", errorbar=CURVE_BAND, markers=True, height=3.5, aspect=1.3,
                           facet_kws={"sharex": False, "sharey": False})  # data sets train for different epochs
        if y in LOG_SCALE_CURVES:
            grid.set(yscale="log")
        grid.set_axis_labels("epoch", label)
        grid.figure.suptitle(f"{study}: {label} (mean, band: min-max over seeds)\n{data_caption(history)}", y=1.08)
        made.append(_save(grid.figure, out_dir / f"{study}_{y}_vs_epoch.png"))
    for metric in [m for m in metric_columns(summary) if m.split("_")[0] in ("fid", "is", "kid")]:
        grid = sns.catplot(data=summary, x=hue, y=metric, hue=style or hue, col=cols, kind="point",
                           errorbar=t_errorbar, capsize=0.15, height=3.5, aspect=1.2, linestyle="none",
                           dodge=_dodge(summary, style or hue))
        for ax in grid.axes.flat:
            sub = summary if cols is None else summary[summary[cols] == ax.get_title().split(" = ")[-1]]
            sns.stripplot(data=sub, x=hue, y=metric, ax=ax, color="black", size=4, alpha=0.5, legend=False,
                          order=[t.get_text() for t in ax.get_xticklabels()])
        grid.tick_params(axis="x", rotation=30)
        grid.figure.suptitle(f"{study}: final {metric} (mean, 95% t-interval over seeds)\n"
                             f"{data_caption(summary)}", y=1.08)
        made.append(_save(grid.figure, out_dir / f"{study}_{metric}_by_{hue}.png"))
    return made


def line_keys(runs: pd.DataFrame) -> tuple[str, str | None]:
    """(hue, style) of a study's curves: loss (and model) where they tell its variants apart,
    else the variant, so runs of different variants are never averaged into one line."""
    by_loss = runs.groupby(["model", "loss"]).ngroups == runs["variant"].nunique() and runs["loss"].nunique() > 1
    if not by_loss:
        return "variant", None
    return "loss", "model" if runs["model"].nunique() > 1 else None


def plot_steps(study: str, steps: pd.DataFrame, out_dir: Path) -> list[Path]:
    """D(G(z)) and G's gradient norm (log scale) over iterations, one line per loss (per variant
    where the loss does not tell them apart; band: seeds)."""
    made = []
    hue, style = line_keys(steps)
    cols = DATA if steps[DATA].nunique() > 1 else None
    for y, label, log in (("d_fake", "mean D(G(z)) = sigmoid(logit)", False), ("g_grad_norm", "G gradient norm", True)):
        if y not in steps or steps[y].isna().all():
            continue
        grid = sns.relplot(data=steps.dropna(subset=[y]), x="step", y=y, hue=hue, style=style, col=cols,
                           kind="line", errorbar=CURVE_BAND, height=3.5, aspect=1.3, facet_kws={"sharex": False})
        if log:
            grid.set(yscale="log")
        grid.set_axis_labels("iteration", label)
        grid.figure.suptitle(f"{study}: {label} per iteration (band: min-max over seeds)\n{data_caption(steps)}",
                             y=1.08)
        made.append(_save(grid.figure, out_dir / f"{study}_{y}_vs_step.png"))
    return made


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
        made.append(_save(fig, out_dir / f"{study}_fid_vs_{x}.png"))
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
        sns.pointplot(data=summary, x="num_classes", y=metric, hue="variant", errorbar=t_errorbar, capsize=0.1,
                      dodge=_dodge(summary, "variant"), ax=ax)
        if metric == "cond_acc":
            for n in sorted(summary["num_classes"].unique()):
                ax.axhline(1 / n, color="grey", lw=0.6, ls=":")
        ax.set_title(f"{study}: {metric} vs number of classes (mean, 95% t-interval over seeds; dotted: chance)\n"
                     f"{data_caption(summary)}", fontsize=9)
        made.append(_save(fig, out_dir / f"{study}_{metric}_vs_classes.png"))
    if not steps.empty and "cls_real" in steps:
        long = steps.dropna(subset=["cls_real"]).melt(
            id_vars=["step", "variant", "num_classes", "seed"], value_vars=["cls_real", "cls_fake"],
            var_name="images", value_name="class_loss")
        grid = sns.relplot(data=long, x="step", y="class_loss", hue="variant", style="images", col="num_classes",
                           kind="line", errorbar=CURVE_BAND, height=3.5, aspect=1.3, facet_kws={"sharex": False})
        grid.set(yscale="log")
        grid.figure.suptitle(f"{study}: D's class loss on real vs generated images\n{data_caption(steps)}", y=1.08)
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
        ax.set_title(f"{study}: per-class conditional accuracy, {int(most['num_classes'].iloc[0])} classes (mean over seeds)\n"
                     f"{data_caption(most)}", fontsize=9)
        _label_font(ax.get_xticklabels())
        made.append(_save(fig, out_dir / f"{study}_per_class_accuracy.png"))
    return made


def sample_grids(study: str, summary: pd.DataFrame, out_dir: Path) -> list[Path]:
    """The last epoch's grid of each variant and data (its first seed), titled with the run and
    its final numbers; a conditional model's rows named by the class they were asked for."""
    made = []
    for row in summary.sort_values("seed").drop_duplicates(["variant", DATA]).itertuples():
        if not row.final_grid:
            continue
        grid = Path(row.final_grid)
        classes = json.loads(RunDir(grid.parents[1]).classes.read_text())["classes"]  # its run's
        conditional = not pd.isna(getattr(row, "cond_acc", math.nan))
        numbers = ", ".join(f"{name} {getattr(row, name):.3g}" for name in ("cond_acc", "confidence", "classes_covered")
                            if not pd.isna(getattr(row, name, math.nan)))
        title = (f"{row.experiment} on {getattr(row, DATA)}, last epoch"
                 + (": one row per requested class" if conditional else "") + (f"\n{numbers}" if numbers else ""))
        out = out_dir / f"{study}_samples_{row.variant.replace('/', '_').replace(',', '').replace(' ', '_')}_{row.dataset}.png"
        made.append(labelled_grid(grid, classes if conditional else [], out, title))
    return made


def labelled_grid(grid_png: Path, classes: list[str], out: Path, title: str) -> Path:
    """A sample grid (torchvision layout: 2 px padding) with a title, each row named by its class
    where `classes` are given."""

    image = plt.imread(grid_png)
    rows = min(len(classes), GRID_MAX_ROWS)
    cell = (image.shape[0] - 2) / max(rows, 1)
    fig, ax = plt.subplots(figsize=(image.shape[1] / 70 + 1.2, image.shape[0] / 70 + 0.6))
    ax.imshow(image, cmap="gray", interpolation="nearest")
    ax.set_yticks([2 + r * cell + (cell - 2) / 2 for r in range(rows)])  # none for an unconditional grid
    ax.set_yticklabels(classes[:rows], fontsize=8)
    _label_font(ax.get_yticklabels())
    ax.set_xticks([])
    ax.set_title(title, fontsize=9)
    return _save(fig, out)


def _label_font(labels) -> None:
    """Kuzushiji class names are kana: use a font that has them where one is installed
    (Debian: fonts-ipafont-gothic); otherwise matplotlib draws boxes, the numbers stay right."""
    from matplotlib import font_manager

    for name in ("IPAGothic", "IPAPGothic", "Noto Sans CJK JP", "Noto Sans JP", "TakaoGothic", "Droid Sans Fallback"):
        if any(f.name == name for f in font_manager.fontManager.ttflist):
            for label in labels:
                label.set_fontname(name)
            return


def class_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Mean [95% interval] of each class metric per variant and number of classes."""
    metrics = [m for m in CLASS_METRICS if m in summary and summary[m].notna().any()]
    rows = []
    for (variant, n), group in summary.groupby(["variant", "num_classes"], sort=True):
        row = {"variant": variant, "num_classes": n, "seeds": len(group)}
        row.update({m: cell(group, m) for m in metrics})
        rows.append(row)
    return pd.DataFrame(rows)


def _dodge(frame: pd.DataFrame, hue: str) -> float | bool:
    """Side-by-side offset for several hue levels (seaborn divides by levels - 1)."""
    return 0.3 if frame[hue].nunique() > 1 else False


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def markdown_table(frame: pd.DataFrame) -> str:
    def fmt(v):
        if isinstance(v, float):
            return "n/a" if math.isnan(v) else f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def _span(low, high) -> str:
    return f"{low}" if low == high else f"{low}-{high}"


def study_header(frame: pd.DataFrame, study, profile: str) -> str:
    """The study's question, the scale its runs were made at, what that scale can and cannot tell
    (params.yaml `studies:`), the data actually used, and the classifier behind any class metric."""
    configs = frame.groupby(["variant", DATA, "loss", "num_classes"]).size()
    epochs = sorted(frame["epochs"].unique())
    images = sorted(frame["num_train_images"].unique()) if "num_train_images" in frame else []
    lines = []
    if study is not None:
        lines.append(f"**Question:** {study.question}\n")
    lines.append(
        f"**Scale (profile `{profile}`):** {len(frame)} runs, {_span(configs.min(), configs.max())} seeds per configuration, "
        f"{'/'.join(map(str, epochs))} epochs on {'/'.join(f'{n:,}' for n in images) or '?'} training images; final "
        f"metrics from {int(frame['n_fake'].max()):,} generated vs {int(frame['n_real'].max()):,} real images.\n")
    if study is not None and study.at_this_scale:
        lines.append(f"**What this scale can and cannot tell:** {study.at_this_scale.strip()}\n")
    for (dataset, label), group in frame.groupby(["dataset", DATA], sort=True):
        lines.append(f"* data `{dataset}`: {group['data'].iloc[0] if 'data' in group else dataset}"
                     + (f"; **stands in for {group['stands_in_for'].iloc[0]}**" if label != dataset else ""))
        if "classifier_accuracy" in group and group["classifier_accuracy"].notna().any():
            accuracy, floor = group["classifier_accuracy"].iloc[0], group["classifier_floor"].iloc[0]
            if pd.isna(floor):
                verdict = "no floor set for this data"
            elif bool(group["classifier_reliable"].iloc[0]):
                verdict = f"floor {floor:.2f}: reliable"
            else:
                verdict = f"**below its floor {floor:.2f}: every classifier metric on this data is unreliable**"
            lines.append(f"  * dataset classifier (behind `cond_acc`, `classes_covered` and the `_classifier` "
                         f"metrics): test accuracy {accuracy:.4f}, {verdict}")
        lines.extend(selection_notes(group))
    return "\n".join(lines) + "\n"


def selection_notes(group: pd.DataFrame) -> list[str]:
    """Which extractor and which real images chose the `best_` checkpoint, against the images its
    metrics are measured on (always the training images); selected and measured on the same
    images with the same extractor, its metrics are optimistic, and the note says so."""
    if "best_reference" not in group:
        return []
    notes = []
    for (extractor, reference), _ in group.groupby(["best_selected_by", "best_reference"], sort=True):
        same = reference == "training" and any(c.startswith("best_") and c.endswith(f"_{extractor}")
                                               and group[c].notna().any() for c in group.columns)
        notes.append(f"  * `best_` checkpoint: lowest per-epoch `{extractor}` FID against the {reference} images; "
                     "final and `best_` metrics against the training images"
                     + (" (**selected and measured on the same images with the same extractor: `best_` "
                        "metrics are optimistic**)" if same else ""))
    return notes


STUDY_PAGES = "studies"  # results/studies/<study>.md: one page per study, plots linked from ../plots/


CURVES = ("fid_cheap", "is_cheap", "cond_acc_cheap", "confidence_cheap")


def write_curves(history: pd.DataFrame, path: Path) -> None:
    """Every run's per-epoch cheap metrics in one long table (study, experiment, epoch, ...): dvc.yaml's
    top-level plots draw each study's runs on one chart from it, and `dvc plots diff` overlays revisions."""
    columns = ["study", "experiment", "variant", "seed", "epoch", *(c for c in CURVES if c in history)]
    history.dropna(subset=["fid_cheap"])[columns].to_csv(path, index=False)


def write_report(params: Params, runs_root: Path, results_dir: Path) -> pd.DataFrame:
    """results/summary.csv, results/plots/, one page per study under results/studies/ and
    results/report.md with every study's section."""
    frames = collect(params, runs_root)
    summary = frames["summary"]
    results_dir.mkdir(parents=True, exist_ok=True)
    summary.to_csv(results_dir / "summary.csv", index=False)
    write_curves(frames["history"], results_dir / "curves.csv")
    plots_dir, pages_dir = results_dir / "plots", results_dir / STUDY_PAGES
    pages_dir.mkdir(exist_ok=True)
    for stale in pages_dir.glob("*.md"):  # a study removed from params.yaml leaves no page behind
        stale.unlink()
    sections = [f"# ganlab report\n\nProfile: `{params.profile}`. One row per experiment; unprefixed "
                "metrics are the final checkpoint's, `best_` ones the checkpoint with the lowest cheap FID "
                "during training. Lower FID / KID is better, higher IS is better. `cond_acc`: share of "
                "generated images the dataset classifier assigns to the requested class (mean over classes); "
                "`classes_covered`: classes receiving at least 1/(2N) of the samples; `confidence`: the "
                "classifier's mean max-probability on generated images. One page per study: "
                + ", ".join(f"[{s}]({STUDY_PAGES}/{s}.md)" for s in sorted(summary["study"].unique())) + ".\n"]
    if summary.attrs.get("missing"):
        sections.append(f"Left out: {'; '.join(summary.attrs['missing'])}.\n")
    for study, frame in summary.groupby("study", sort=True):
        in_study = {k: (v[v["study"] == study] if not v.empty else v) for k, v in frames.items() if k != "summary"}
        body, plots = study_section(study, frame, in_study, params, plots_dir)
        sections.append(f"## Study `{study}`\n\n{body}" + "".join(f"![{p.stem}](plots/{p.name})\n\n" for p in plots))
        (pages_dir / f"{study}.md").write_text(
            f"# Study `{study}`\n\n{body}" + "".join(f"![{p.stem}](../plots/{p.name})\n\n" for p in plots))
    (results_dir / "report.md").write_text("\n".join(sections))
    return summary


def study_section(study: str, frame: pd.DataFrame, in_study: dict[str, pd.DataFrame], params: Params,
                  plots_dir: Path) -> tuple[str, list[Path]]:
    """A study's text (question, scale, how to reproduce it, the write-ups' claims beside ours,
    tables) and its plots."""
    from pipeline.claims import CLAIMS, claims_table

    shown = [c for c in [*ID_COLUMNS, *metric_columns(frame), "confidence", "classifier_accuracy", "best_epoch",
                         "train_time_s"] if c in frame]
    members = [n for n in params.experiments if resolve_experiment(params, n).study == study]
    parts = [study_header(frame, params.studies.get(study), params.profile), reproduction(frame, params, members), ""]
    if study in CLAIMS:
        heading = "Controls (each must pass)" if study == "controls" else "The write-ups' claims beside ours"
        parts.append(f"### {heading}\n\n{markdown_table(claims_table(CLAIMS[study](frame, in_study['steps'])))}\n")
    parts.append(f"### Every run\n\n{markdown_table(frame[shown])}\n")
    plots = plot_study(study, frame, in_study["history"], plots_dir)
    if study != "acgan_classes":  # that study has its own per-class-count tables
        by = "loss" if study == "generator_loss" else "variant"
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
    if not in_study["steps"].empty and study != "acgan_classes":
        plots += plot_steps(study, in_study["steps"], plots_dir)
    if study == "projected_gan":
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
        plots += plot_fid_over_time(study, in_study["history"], plots_dir)
    if "cond_acc" in frame and frame["cond_acc"].notna().any():
        parts.append("### By number of classes (mean [95% t-interval] over seeds)\n\n"
                     f"{markdown_table(class_table(frame))}\n")
        plots += plot_class_study(study, frame, in_study["steps"], in_study["per_class"], plots_dir)
    plots += sample_grids(study, frame, plots_dir)
    return "\n".join(parts) + "\n", plots


def reproduction(frame: pd.DataFrame, params: Params, names: list[str]) -> str:
    """How to re-create a study's runs (`names`: all its experiments, evaluated or not), the code
    and machine that made them, and its wall time (training with its per-epoch metrics, plus
    evaluation, summed over the runs)."""
    names = sorted(names)
    prefixes = sorted({n.split("_")[0] for n in names})
    others = [e for e in params.experiments if e not in names]
    if all(not any(o.startswith(p + "_") for o in others) for p in prefixes):
        command = "dvc repro --glob " + " ".join(f"'evaluate@{p}_*'" for p in prefixes)
    else:
        command = "dvc repro " + " ".join(f"evaluate@{n}" for n in names)
    lines = [f"**Reproduce** (with this `params.yaml`, profile `{params.profile}`): `{command}`, then "
             "`dvc repro aggregate` for this page."]
    if "code_version" in frame and frame["code_version"].notna().any():
        lines.append(f"**Code:** {', '.join(sorted(frame['code_version'].dropna().unique()))}; "
                     f"**machine:** {'; '.join(sorted(frame['machine'].dropna().unique()))}.")
    if "wall_time_s" in frame and frame["wall_time_s"].notna().all():
        train, evaluate = frame["wall_time_s"].sum(), frame.get("evaluate_time_s", pd.Series(dtype=float)).sum()
        lines.append(f"**Wall time:** {(train + evaluate) / 60:.1f} min over {len(frame)} runs (training with its "
                     f"per-epoch metrics {train / 60:.1f} min, final evaluation {evaluate / 60:.1f} min; "
                     "start-up, data preparation and dataset classifiers not counted).")
    return "\n\n".join(lines) + "\n"

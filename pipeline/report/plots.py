"""The report's seaborn plots: the generic ones every study gets (curves over epochs and
iterations, final metrics with their 95% t-intervals, the class-conditional view, sample grids)
and the helpers a study plug-in draws its own with."""
from __future__ import annotations

import contextlib
import functools
import json
import math
import unicodedata
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: files only
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from pipeline.core.layout import GRID_MAX_ROWS  # noqa: E402
from pipeline.core.rundir import RunDir  # noqa: E402
from pipeline.report.tables import CLASS_METRICS, metric_columns  # noqa: E402
from pipeline.report.stats import DATA, t_errorbar  # noqa: E402

CURVE_BAND = ("pi", 100)  # curves: min-max over seeds around the mean


def data_caption(frame: pd.DataFrame) -> str:
    """'data: <label>, ...' for a plot title: which data the curves come from, stand-ins named."""
    return "data: " + "; ".join(sorted(frame[DATA].unique()))


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
        made.append(save_figure(grid.figure, out_dir / f"{study}_{y}_vs_epoch.png"))
    for metric in [m for m in metric_columns(summary) if m.split("_")[0] in ("fid", "is", "kid")]:
        grid = sns.catplot(data=summary, x=hue, y=metric, hue=style or hue, col=cols, kind="point",
                           errorbar=t_errorbar, capsize=0.15, height=3.5, aspect=1.2, linestyle="none",
                           dodge=_dodge(summary, style or hue))
        for ax in grid.axes.flat:
            sub = summary if cols is None else summary[summary[cols] == ax.get_title().split(" = ")[-1]]
            with _seeded_jitter():
                sns.stripplot(data=sub, x=hue, y=metric, ax=ax, color="black", size=4, alpha=0.5, legend=False,
                              order=[t.get_text() for t in ax.get_xticklabels()])
        grid.tick_params(axis="x", rotation=30)
        grid.figure.suptitle(f"{study}: final {metric} (mean, 95% t-interval over seeds)\n"
                             f"{data_caption(summary)}", y=1.08)
        made.append(save_figure(grid.figure, out_dir / f"{study}_{metric}_by_{hue}.png"))
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
        made.append(save_figure(grid.figure, out_dir / f"{study}_{y}_vs_step.png"))
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
        made.append(save_figure(fig, out_dir / f"{study}_{metric}_vs_classes.png"))
    if not steps.empty and "cls_real" in steps:
        long = steps.dropna(subset=["cls_real"]).melt(
            id_vars=["step", "variant", "num_classes", "seed"], value_vars=["cls_real", "cls_fake"],
            var_name="images", value_name="class_loss")
        grid = sns.relplot(data=long, x="step", y="class_loss", hue="variant", style="images", col="num_classes",
                           kind="line", errorbar=CURVE_BAND, height=3.5, aspect=1.3, facet_kws={"sharex": False})
        grid.set(yscale="log")
        grid.figure.suptitle(f"{study}: D's class loss on real vs generated images\n{data_caption(steps)}", y=1.08)
        made.append(save_figure(grid.figure, out_dir / f"{study}_class_loss_vs_step.png"))
    if not per_class.empty:
        most = per_class[per_class["num_classes"] == per_class["num_classes"].max()]
        table = most.groupby(["variant", "class_index", "class"])["cond_acc"].mean().reset_index()
        heat = table.pivot(index="variant", columns="class_index", values="cond_acc")
        names = table.drop_duplicates("class_index").set_index("class_index")["class"]
        fig, ax = plt.subplots(figsize=(max(6, 0.32 * heat.shape[1] + 2), 0.5 * heat.shape[0] + 1.5))
        sns.heatmap(heat, vmin=0, vmax=1, cmap="viridis", ax=ax, cbar_kws={"label": "conditional accuracy"},
                    xticklabels=class_labels([names[i] for i in heat.columns]))
        ax.set_xlabel("requested class")
        ax.set_title(f"{study}: per-class conditional accuracy, {int(most['num_classes'].iloc[0])} classes (mean over seeds)\n"
                     f"{data_caption(most)}", fontsize=9)
        _label_font(ax.get_xticklabels())
        made.append(save_figure(fig, out_dir / f"{study}_per_class_accuracy.png"))
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
    ax.set_yticklabels(class_labels(classes[:rows]), fontsize=8)
    _label_font(ax.get_yticklabels())
    ax.set_xticks([])
    ax.set_title(title, fontsize=9)
    return save_figure(fig, out)


KANA_FONTS = ("IPAGothic", "IPAPGothic", "Noto Sans CJK JP", "Noto Sans JP", "TakaoGothic", "Droid Sans Fallback")


def class_labels(names: list[str]) -> list[str]:
    """Class names as tick labels. Kuzushiji classes are kana: where no font that has them is
    installed (Debian: fonts-ipafont-gothic), their readings (お -> o) rather than the boxes, and a
    warning per glyph, that matplotlib's default font gives."""
    return list(names) if _kana_font() else [_drawable(name) for name in names]


def _label_font(labels) -> None:
    """Draw tick labels in the kana font where one is installed."""
    if _kana_font():
        for label in labels:
            label.set_fontname(_kana_font())


@functools.cache
def _kana_font() -> str | None:
    from matplotlib import font_manager

    installed = {f.name for f in font_manager.fontManager.ttflist}
    return next((name for name in KANA_FONTS if name in installed), None)


@functools.cache
def _default_font():
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    return FT2Font(font_manager.findfont(font_manager.FontProperties()))


def _drawable(text: str) -> str:
    """`text` with each character the default font lacks written as its reading: a kana letter's
    romanisation from its Unicode name (HIRAGANA LETTER KI: ki), anything else its code point."""
    out = []
    for char in text:
        name = unicodedata.name(char, "")
        if _default_font().get_char_index(ord(char)):
            out.append(char)
        elif name.startswith(("HIRAGANA LETTER ", "KATAKANA LETTER ")):
            out.append(name.split(" LETTER ")[1].lower().replace("small ", ""))
        else:
            out.append(f"U+{ord(char):04X}")
    return "".join(out)


def _dodge(frame: pd.DataFrame, hue: str) -> float | bool:
    """Side-by-side offset for several hue levels (seaborn divides by levels - 1)."""
    return 0.3 if frame[hue].nunique() > 1 else False


def save_figure(fig, path: Path) -> Path:
    """Write and close a figure: every plot of the report at one resolution."""
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


@contextlib.contextmanager
def _seeded_jitter():
    """seaborn jitters strip-plot points with numpy's global random state: seeded here, so the same
    runs give the same plots (byte for byte) and `dvc repro aggregate` reproduces them."""
    state = np.random.get_state()
    np.random.seed(0)
    try:
        yield
    finally:
        np.random.set_state(state)


def plot_acgan_iterations(study: str, steps: pd.DataFrame, out_dir: Path) -> list[Path]:
    """The ACGAN write-up's per-iteration curves, one panel per variant (row) and class count
    (column), mean over seeds with a min-max band: D(real) - D(fake), and D's class loss on real
    vs generated images (runs without a class head have none)."""
    made = []
    gap = steps.dropna(subset=["d_real", "d_fake"]).assign(d_gap=lambda f: f["d_real"] - f["d_fake"])
    if not gap.empty:
        grid = sns.relplot(data=gap, x="step", y="d_gap", row="variant", col="num_classes", kind="line",
                           errorbar=CURVE_BAND, height=2.4, aspect=1.8, facet_kws={"sharex": False, "sharey": False})
        grid.refline(y=0, color="grey", lw=0.6, ls=":")
        grid.set_axis_labels("iteration", "D(real) - D(fake)")
        grid.figure.suptitle(f"{study}: D(real) - D(fake) per iteration (mean, band: min-max over seeds)\n"
                             f"{data_caption(gap)}", y=1 + 0.15 / grid.axes.shape[0])
        made.append(save_figure(grid.figure, out_dir / f"{study}_d_gap_vs_step.png"))
    if "cls_real" in steps and steps["cls_real"].notna().any():
        long = steps.dropna(subset=["cls_real", "cls_fake"]).melt(
            id_vars=["step", "variant", "num_classes", "seed", DATA], value_vars=["cls_real", "cls_fake"],
            var_name="images", value_name="class_loss").replace({"images": {"cls_real": "real", "cls_fake": "generated"}})
        grid = sns.relplot(data=long, x="step", y="class_loss", hue="images", row="variant", col="num_classes",
                           kind="line", errorbar=CURVE_BAND, height=2.4, aspect=1.8,
                           facet_kws={"sharex": False, "sharey": False})
        grid.set(yscale="log")
        grid.set_axis_labels("iteration", "D's class loss")
        grid.figure.suptitle(f"{study}: D's class loss on real vs generated images per iteration (mean, band: "
                             f"min-max over seeds)\n{data_caption(long)}", y=1 + 0.15 / grid.axes.shape[0])
        made.append(save_figure(grid.figure, out_dir / f"{study}_class_loss_by_variant_vs_step.png"))
    return made

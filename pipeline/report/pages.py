"""Aggregate every experiment into results/summary.csv, seaborn plots per study and report.md.

Intervals in tables are 95% Student-t intervals of the mean over seeds (mean +- t * s / sqrt(n));
differences between two losses use Welch's t interval and test (unequal variances, Welch-
Satterthwaite degrees of freedom). The plots of final metrics draw the same t-intervals;
curves over epochs / iterations draw the mean over seeds with a band from the lowest to the
highest seed (a bootstrap per point of a few seeds says nothing more and
costs minutes).

This module reads the runs and lays out the pages; the tables are report_tables', the plots
report_plots', and what one study adds (claims, tables, plots) its plug-in's in pipeline/report/studies.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from pipeline.report.claims import claims_table
from pipeline.core.config import ExperimentConfig, Params, resolve_experiment
from pipeline.core.extractors import HELDOUT
from pipeline.core.registry import LOSSES
from pipeline.core.rundir import RunDir
from pipeline.report.plots import plot_class_study, plot_steps, plot_study, sample_grids
from pipeline.report.tables import (NO_HOLDOUT, class_table, comparison_sections, markdown_table,
                                    metric_columns, settings_table)
from pipeline.report.stats import DATA
from pipeline.report.studies import report_for

ID_COLUMNS = ["experiment", "study", "variant", "model", "nets", "data_label", "num_classes", "loss", "seed", "epochs",
              "mlflow_run_id"]
# the cell of a run whose MLflow run id was never recorded
NOT_TRACKED = "not tracked: train.json records no MLflow run id"
# the resolved config's fields the settings table shows in columns of their own, or that are not
# about training (evaluation, logging, hardware): the rest appear under "other settings" where
# they differ from their defaults
SETTINGS_SHOWN = {"study", "variant", "model", "dataset", "loss", "seed", "epochs", "batch_size", "lr_g", "lr_d",
                  "betas_g", "betas_d", "z_dim", "z_dist", "z_mean", "model_args", "max_train_images"}
NOT_TRAINING = {"eval_every", "checkpoint_every", "log_every", "eval_samples", "n_fake", "n_real", "device", "compile",
                "processes", "extractors", "cheap_extractor", "near_duplicates", "d_loss_threshold"}


def data_label(dataset: str, stands_in_for: str | None) -> str:
    return f"{dataset} (stand-in for {stands_in_for})" if stands_in_for else dataset


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
        history = pd.read_csv(paths.history)
        ids = {"experiment": name, "study": cfg.study, "variant": cfg.variant_label(), "model": cfg.model,
               "nets": nets_label(cfg),
               "dataset": cfg.dataset, DATA: data_label(cfg.dataset, metrics.get("stands_in_for")),
               "num_classes": len(classes["classes"]), "loss": cfg.loss, "seed": cfg.seed, "epochs": cfg.epochs,
               "pretrain_epochs": cfg.pretrain_classifier_epochs, "sweep": cfg.sweep, "draw": cfg.draw}
        grids = paths.grids()
        run_id = (metrics.get("mlflow_run_id")  # the run evaluate re-made where the store lost train's
                  or train.get("mlflow_run_id") or metrics.get("train_run_id") or NOT_TRACKED)
        rows.append({**metrics, **ids, "mlflow_run_id": run_id, **run_settings(cfg, train, history),
                     "train_time_s": train["train_time_s"], "wall_time_s": train.get("wall_time_s"),
                     "code_version": train.get("code_version"), "machine": train.get("machine"),
                     "num_train_images": train.get("num_train_images"),
                     # which extractor and which real images chose the best_ checkpoint
                     "best_selected_by": train.get("cheap_extractor"), "best_reference": train.get("cheap_reference"),
                     "final_grid": str(grids[-1]) if grids else ""})
        tag = {k: v for k, v in ids.items() if k != "epochs"}
        histories.append(history.assign(**tag))
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


def nets_label(cfg: ExperimentConfig) -> str:
    """The run's model_args, or that it set none (its family's defaults): never an empty cell."""
    return ", ".join(f"{k}={v}" for k, v in sorted(cfg.model_args.items())) or f"none set: {cfg.model}'s defaults"


def run_settings(cfg: ExperimentConfig, train: dict, history: pd.DataFrame) -> dict:
    """What a run was trained with (summary.csv columns, the settings table): its resolved config,
    the one its train.json fingerprint matches, and the G updates train.json counted."""
    steps = train.get("steps")
    if steps is None and "step" in history and len(history):  # train.json of an older ganlab
        steps = int(history["step"].iloc[-1])
    z_shape = {"normal": "N({m}, 1)", "uniform": "U({lo}, {hi})"}[cfg.z_dist]
    return {"batch_size": cfg.batch_size, "g_updates": steps if steps is not None else "not recorded",
            "lr": f"{cfg.lr_g:g} / {cfg.lr_d:g}", "betas": f"{_setting(cfg.betas_g)} / {_setting(cfg.betas_d)}",
            "z": f"{cfg.z_dim} x " + z_shape.format(m=f"{cfg.z_mean:g}", lo=f"{cfg.z_mean - 1:g}", hi=f"{cfg.z_mean + 1:g}"),
            "other_settings": other_settings(cfg, train)}


def other_settings(cfg: ExperimentConfig, train: dict) -> str:
    """The training settings without a column of their own that differ from their defaults (D
    updates per G update: the loss's default counts as a default only when it is 1; precision:
    what the training used, from train.json)."""
    out = []
    for name, field in type(cfg).model_fields.items():
        if name in SETTINGS_SHOWN or name in NOT_TRAINING:
            continue
        value, default = getattr(cfg, name), field.get_default(call_default_factory=True)
        if name == "n_critic":
            value, default = value or LOSSES[cfg.loss].n_critic, 1
        elif name == "precision":
            value, default = train.get("precision", value), "fp32"
        if value != default:
            out.append(f"{name}={_setting(value)}")
    return ", ".join(out) or "none"


def _setting(value) -> str:
    if hasattr(value, "model_dump"):
        return "{" + ", ".join(f"{k}: {_setting(v)}" for k, v in value.model_dump().items()) + "}"
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_setting(v) for v in value) + "]"
    return f"{value:g}" if isinstance(value, float) else str(value)


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
        lines.append(heldout_note(group))
        lines.extend(selection_notes(group))
    return "\n".join(lines) + "\n"


def heldout_note(group: pd.DataFrame) -> str:
    """Which images the `_heldout` metrics of one dataset's runs compare with, or why there are none."""
    notes = sorted(group["heldout"].dropna().unique()) if "heldout" in group else []
    if not notes:
        return "  * no `_heldout` metrics: evaluated before they existed (run its evaluate stage)"
    return "  * " + "; ".join(f"`{HELDOUT}` metrics (FID / KID) against {n}" if not n.startswith("none")
                             else f"no `{HELDOUT}` metrics: {n}" for n in notes)


def selection_notes(group: pd.DataFrame) -> list[str]:
    """Which extractor and which real images chose the `best_` checkpoint, against the images its
    metrics are measured on (the training images; `_heldout` ones the held-out images); selected and
    measured on the same images with the same extractor, those metrics are optimistic, and the note
    says so."""
    if "best_reference" not in group:
        return []
    notes = []
    heldout = any(c.endswith(HELDOUT) and group[c].notna().any() for c in group.columns)
    measured = "final and `best_` metrics against the training images" + (
        f", `{HELDOUT}` ones against the held-out images" if heldout else "")
    for (extractor, reference), _ in group.groupby(["best_selected_by", "best_reference"], sort=True):
        suffix = {"training": "", "held-out": HELDOUT}.get(reference)
        same = [c for c in group.columns if suffix is not None and c.startswith("best_")
                and c.endswith(f"_{extractor}{suffix}") and group[c].notna().any()]
        notes.append(f"  * `best_` checkpoint: lowest per-epoch `{extractor}` FID against the {reference} images; "
                     + measured + (f" (**selected and measured on the same images with the same extractor: "
                                   f"{', '.join(f'`{c}`' for c in same)} optimistic**)" if same else ""))
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
                "classifier's mean max-probability on generated images. `_heldout`: FID / KID against real "
                "images held out of training (a G that copies its training images scores well against the "
                "training images only). One page per study: "
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
    tables) and its plots: the generic ones, with what the study's plug-in adds or leaves out."""
    plugin = report_for(study)
    shown = [c for c in [*ID_COLUMNS, *metric_columns(frame), "confidence", "classifier_accuracy", "best_epoch",
                         "train_time_s"] if c in frame]
    members = [n for n in params.experiments if resolve_experiment(params, n).study == study]
    parts = [study_header(frame, params.studies.get(study), params.profile), reproduction(frame, params, members), "",
             settings_section(frame, params.profile)]
    if plugin.claims:
        parts.append(f"### {plugin.claims_heading}\n\n"
                     f"{markdown_table(claims_table(plugin.claims(frame, in_study['steps'], in_study['per_class'])))}\n")
    every = frame[shown].copy()
    for column in (c for c in shown if c.endswith(HELDOUT)):
        every[column] = every[column].astype(object).where(every[column].notna(), NO_HOLDOUT)
    parts.append(f"### Every run\n\n{markdown_table(every)}\n")
    plots = plot_study(study, frame, in_study["history"], plots_dir)
    if plugin.by:
        parts += comparison_sections(frame, plugin.by)
    if not in_study["steps"].empty and plugin.iteration_plots:
        plots += plot_steps(study, in_study["steps"], plots_dir)
    if plugin.extra:
        own_parts, own_plots = plugin.extra(study, frame, in_study, plots_dir)
        parts += own_parts
        plots += own_plots
    if "cond_acc" in frame and frame["cond_acc"].notna().any():
        parts.append("### By number of classes (mean [95% t-interval] over seeds)\n\n"
                     f"{markdown_table(class_table(frame))}\n")
        plots += plot_class_study(study, frame, in_study["steps"], in_study["per_class"], plots_dir)
    plots += sample_grids(study, frame, plots_dir)
    return "\n".join(parts) + "\n", plots


def settings_section(frame: pd.DataFrame, profile: str) -> str:
    """The settings table: every run setting a page mentions, from the runs themselves."""
    return ("### Settings of these runs\n\n"
            f"From each run's resolved configuration (`defaults` and its entry in `params.yaml`, profile `{profile}`: "
            "what its train.json fingerprint says it was trained with) and its train.json (`G updates`: the "
            "generator steps it made, each after `n_critic` D steps; `training images`: the images it trained on). "
            "Other settings: those without a column that differ from their defaults.\n\n"
            f"{markdown_table(settings_table(frame))}\n")


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

"""DVC stage evaluate@<experiment>: runs/<experiment>/metrics.json, also logged to train's MLflow run."""
import json
import time

from pipeline.data import prepare as data
from pipeline.core import layout, phases
from pipeline.core.config import Params, load_params, resolve_experiment
from pipeline.core.extractors import quoted_first
from pipeline.evaluate.run import evaluate_run
from pipeline.core.layout import write_json_atomic
from pipeline.core.rundir import RunDir
from pipeline.tracking.access import check_write_access
from pipeline.tracking.run import Run
from pipeline.tracking.training import complete_from, run_identity


def evaluate(name: str, params: Params | None = None) -> dict:
    params = params or load_params()
    cfg = resolve_experiment(params, name)
    check_write_access([cfg.study])  # before any work: a server that refuses the run says so now
    with phases.timed("setup"):
        prepared = data.load_prepared(layout.prepared_dir(cfg.dataset))
    paths = RunDir.of(name)
    train = json.loads(paths.summary.read_text())
    if train.get("status") == "diverged":  # nothing to measure: said so in its outputs (the report lists it)
        metrics = {"status": "diverged", "error": train["error"], "epochs": train["epochs"],
                   "train_run_id": train["mlflow_run_id"]}
        write_json_atomic(paths.metrics, metrics)
        write_json_atomic(paths.classes, {"classes": prepared.classes})
        write_json_atomic(paths.headline, headline(metrics))
        print(f"ganlab: {name}: not evaluated, its training diverged")
        return metrics
    started = time.perf_counter()
    with phases.timed("evaluate"):
        metrics, skipped, details = evaluate_run(
            cfg, prepared, paths, params.metrics, classifier_path=layout.classifier_path(cfg.dataset),
        )
    metrics["evaluate_time_s"] = time.perf_counter() - started  # the report's wall time per study
    train_run_id = train["mlflow_run_id"]
    metrics["train_run_id"] = train_run_id  # which training these numbers describe (the report checks)
    for extractor, reason in skipped.items():
        print(f"ganlab: {name}: {extractor} metrics skipped: {reason}")
    if metrics["heldout"].startswith("none"):
        print(f"ganlab: {name}: no FID against held-out images: {metrics['heldout']}")
    write_json_atomic(paths.metrics, metrics)
    write_json_atomic(paths.classes, {"classes": prepared.classes, **details})
    write_json_atomic(paths.headline, headline(metrics))

    with phases.timed("mlflow"):
        log_to_mlflow(params, name, cfg, prepared, paths, metrics, skipped)
    return metrics


def log_to_mlflow(params: Params, name: str, cfg, prepared, paths: RunDir, metrics: dict, skipped: dict) -> None:
    """The numbers and files into train's MLflow run (re-made if the store lost it), which ends FINISHED."""
    train_run_id = metrics["train_run_id"]
    run = Run.reopen(train_run_id, study=cfg.study, recreate=lambda: recreated_run(params, name, cfg, prepared))
    if run.run_id != train_run_id:  # the store lost train's run: say which run holds these numbers now
        metrics["mlflow_run_id"] = run.run_id
        write_json_atomic(paths.metrics, metrics)
    complete_from(run, paths)  # what training could not deliver (or a re-made run lacks)
    numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}  # not the data labels
    run.log_metrics({f"eval/{k}": v for k, v in numbers.items()}, step=metrics["epochs"])
    run.set_tags({"dvc_stage_evaluate": f"evaluate@{name}",
                  "heldout": metrics["heldout"],  # the `_heldout` metrics' images, or why there are none
                  **{f"skipped.{ext}": reason[:5000] for ext, reason in skipped.items()}})
    run.log_artifact(paths.metrics)
    run.log_artifact(paths.classes)
    run.end("FINISHED")


def headline(metrics: dict) -> dict:
    """runs/<name>/headline.json, the one DVC metrics file of an experiment: its FID / IS / KID with the
    extractor the report quotes (inception, else effnet, else the dataset classifier) and a conditional
    model's accuracy, so that `dvc metrics show runs/*/headline.json` puts every experiment in one row
    of a few columns. Every number stays in metrics.json."""
    if metrics.get("status") == "diverged":
        return {"status": "diverged"}
    extractor = next((x for x in quoted_first() if f"fid_{x}" in metrics), None)
    if extractor is None:  # every extractor skipped (e.g. inception without its weights): metrics.json says why
        return {"status": "not measured"}
    numbers = {"extractor": extractor, **{kind: metrics.get(f"{kind}_{extractor}") for kind in ("fid", "is", "kid")},
               "cond_acc": metrics.get("cond_acc")}  # conditional models only
    return {key: value for key, value in numbers.items() if value is not None}


def recreated_run(params: Params, name: str, cfg, prepared) -> Run:
    """Train's MLflow run, re-made from runs/<name>/ when the store lost it: the same identity,
    then everything the files hold (complete_from)."""
    tags, logged_params = run_identity(params, name, cfg, prepared.meta)
    return Run.start(cfg.study, name, params=logged_params, tags=tags)


if __name__ == "__main__":
    from stages._cli import run

    run(evaluate, "python -m stages.evaluate EXPERIMENT")

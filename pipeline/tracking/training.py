"""What a training's MLflow run holds, read from what the training writes: its identity (tags and
params), its dataset input, its tables as metrics, its files and its generators as MLflow models.
The training's tracking callback (pipeline.train.callbacks.Tracking) logs these as it goes; the
evaluate stage completes a run from runs/<experiment>/ when the server was away or lost the run."""
from __future__ import annotations

import csv
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Mapping
from unittest import mock

from pipeline.tracking.run import Run


def run_identity(params, name: str, cfg, meta: dict) -> tuple[dict, dict]:
    """The tags and params of experiment `name`'s MLflow run (train starts it; evaluate re-creates
    it with the same identity if the store lost it)."""
    from pipeline.data.prepare import identity

    tags = {"dvc_stage": f"train@{name}", "profile": params.profile, "experiment": name,
            # `group`: the runs that differ only by seed (filter on tags.group in `mlflow ui`)
            "group": f"{cfg.variant_label()} on {cfg.dataset}", "seed": str(cfg.seed),
            **({"sweep": cfg.sweep, "draw": str(cfg.draw)} if cfg.sweep else {}),  # filter a sweep's runs in `mlflow ui`
            **{k: v for k, v in identity(cfg.dataset, meta).items() if v}}
    logged_params = {**cfg.model_dump(mode="json"), "profile": params.profile,
                     "dataset_options": params.datasets[cfg.dataset].model_dump(mode="json")}
    return tags, logged_params


def log_training_data(run: Run, name: str, meta: Mapping) -> None:
    """The prepared dataset as the run's MLflow dataset input: runs on the same data share its name
    and digest (the first 16 hex digits of the prepared arrays' content hash), a changed dataset
    shows another digest."""
    from mlflow.entities import Dataset, InputTag

    dataset = Dataset(
        name=name, digest=meta["content_hash"][:16], source_type="local",  # MLflow takes <= 36 characters
        source=json.dumps({"prepared": f"data/prepared/{name}", "source": meta["source"],
                           "description": meta.get("description")}),
        schema=json.dumps({"images": ["uint8", meta["channels"], meta["resolution"], meta["resolution"]],
                           "classes": meta.get("classes", [])}),
        profile=json.dumps({"num_images": meta["num_images"], "num_test_images": meta.get("num_test_images", 0)}))
    tags = [InputTag("mlflow.data.context", "training")]
    if meta.get("stands_in_for"):
        tags.append(InputTag("stands_in_for", meta["stands_in_for"]))
    run.log_dataset(dataset, tags)


def log_training_tables(run: Run, history: list[Mapping], steps: list[Mapping]) -> None:
    """Log a training's per-epoch and per-iteration rows (history.csv / steps.csv) as training
    logs them: epoch metrics at step = epoch, iteration metrics as step/<name>."""
    def numbers(row, prefix=""):
        out = {}
        for key, value in row.items():
            try:
                number = float(value)
            except (TypeError, ValueError):
                continue
            if key not in ("epoch", "step") and number == number:  # not NaN / empty
                out[prefix + key] = number
        return out

    run.log_metric_rows([(int(r["epoch"]), numbers(r)) for r in history])
    run.log_metric_rows([(int(r["step"]), numbers(r, "step/")) for r in steps])


def log_training_artifacts(run: Run, paths) -> None:
    """A finished training's files (a pipeline.core.rundir.RunDir): tables, summary, progress GIF,
    final checkpoint and the per-epoch sample grids."""
    for path in (paths.history, paths.steps, paths.summary, paths.progress_gif, paths.last):
        run.log_artifact(path)
    run.log_artifact(paths.samples, "samples")


def log_generators(run: Run, paths) -> None:
    """The final and best G as MLflow PyTorch models (`generator`, `generator_best`), with their
    code pickled by value: `mlflow.pytorch.load_model` rebuilds them where ganlab is not installed.
    A server that does not answer gets them from the evaluate stage (complete_from)."""
    import cloudpickle
    import mlflow.pytorch
    import torch

    import pipeline
    from pipeline.train.checkpoint import load_checkpoint

    cloudpickle.register_pickle_by_value(pipeline)
    # pickle is chosen on purpose (see above); MLflow's warning about it, twice per training, says nothing new
    logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)
    # MLflow checks the requirements against this environment, which they were just read from: the
    # check cannot warn, and it scans every installed distribution (~1 s per training on a 2-core VM)
    same_environment = mock.patch("mlflow.utils.environment.warn_dependency_requirement_mismatches",
                                  lambda requirements: None, create=True)
    try:
        with same_environment:
            for name, checkpoint in (("generator", paths.last), ("generator_best", paths.best)):
                with tempfile.TemporaryDirectory() as tmp:
                    mlflow.pytorch.save_model(load_checkpoint(checkpoint).sampler(), Path(tmp) / name,
                                              pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
                                              serialization_format="pickle")  # keeps sample(); pt2 keeps forward only
                    run.client.log_artifacts(run.run_id, str(Path(tmp) / name), name)
    except Exception as exc:
        if not run.unreachable(exc):
            raise
        print(f"ganlab: MLflow server {run.client.tracking_uri} not reachable: the generator models are "
              "logged by the evaluate stage", file=sys.stderr, flush=True)
    finally:
        cloudpickle.unregister_pickle_by_value(pipeline)


def complete_from(run: Run, paths) -> None:
    """Deliver what the run lacks of a finished training in runs/<experiment>/ (its tracking
    server was away, or the store lost the run): the epochs and iterations after the last it
    holds, the training's files if it has none of them, and the generator models."""
    with open(paths.history) as history, open(paths.steps) as steps:
        epochs, iterations = list(csv.DictReader(history)), list(csv.DictReader(steps))
    last_epoch, last_step = run.last_step("loss_d"), run.last_step("step/loss_d")
    log_training_tables(run, [r for r in epochs if int(r["epoch"]) > last_epoch],
                        [r for r in iterations if int(r["step"]) > last_step])
    logged = {a.path for a in run.client.list_artifacts(run.run_id)}
    if paths.summary.name not in logged:
        log_training_artifacts(run, paths)
    if "generator_best" not in logged and paths.best.exists():
        log_generators(run, paths)

"""MLflow tracking: one MLflow experiment per study, one run per experiment entry.

The store is MLflow's own default (``sqlite:///mlflow.db`` in the working directory) unless
``MLFLOW_TRACKING_URI`` points elsewhere (e.g. a server); MlflowClient resolves both.
"""
from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any, Mapping

from mlflow.entities import Metric, Param, RunStatus
from mlflow.tracking import MlflowClient

MAX_BATCH = 1000  # MLflow's log_batch limit for metrics


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}: MLflow params are flat strings."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class Run:
    """A handle on one MLflow run; every call goes straight to the store (no global state)."""

    def __init__(self, client: MlflowClient, run_id: str):
        self.client, self.run_id = client, run_id

    @classmethod
    def start(cls, study: str, run_name: str, *, params: Mapping[str, Any], tags: Mapping[str, str]) -> "Run":
        client = MlflowClient()
        experiment = client.get_experiment_by_name(study)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(study)
        run = client.create_run(experiment_id, run_name=run_name, tags={"git_commit": git_commit(), **tags})
        handle = cls(client, run.info.run_id)
        flat = [Param(k, str(v)[:6000]) for k, v in flatten(params).items()]
        for i in range(0, len(flat), 100):
            client.log_batch(handle.run_id, params=flat[i : i + 100])
        return handle

    @classmethod
    def reopen(cls, run_id: str) -> "Run":
        """Continue a run (resumed training, or evaluate logging into train's run)."""
        client = MlflowClient()
        client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
        return cls(client, run_id)

    def log_metrics(self, values: Mapping[str, float], step: int) -> None:
        self.log_metric_rows([(step, values)])

    def log_metric_rows(self, rows: list[tuple[int, Mapping[str, float]]]) -> None:
        """Several steps' metrics in as few requests as MLflow allows (one per 1,000 values): a
        request per logged step would cost more than the training steps of a small model."""
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, step) for step, values in rows for k, v in values.items()]
        for i in range(0, len(metrics), MAX_BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[i : i + MAX_BATCH])

    def set_tags(self, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, str(value))

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        elif path.exists():
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def last_step(self, key: str) -> int:
        """The highest step logged for `key` (-1 if none): a resumed run does not log again what
        its killed predecessor logged after its last checkpoint."""
        return max((m.step for m in self.client.get_metric_history(self.run_id, key)), default=-1)

    def supersede(self, successor: str, why: str) -> None:
        """Close a run that will never finish (killed before its first checkpoint, or its saved
        state discarded): KILLED, tagged with the run that carries on instead."""
        self.set_tags({"superseded_by": successor, "superseded_because": why})
        self.end("KILLED")

    def end(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)

"""MLflow tracking: one MLflow experiment per study, one run per experiment entry. `Run` is the
transport (queued, retried, never stalling training); what a training logs is pipeline.tracking.training.

The store is ``mlflow.db`` (artifacts in ``mlruns/``) in the user's workspace unless
``MLFLOW_TRACKING_URI`` points elsewhere (e.g. a server). A queued or temporary DVC experiment
runs in a copy of the repository under ``.dvc/tmp/exps/``, deleted when it ends: its runs go to
the workspace's store all the same.
"""
from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Mapping

from mlflow.entities import Metric, Param, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, RESOURCE_DOES_NOT_EXIST, ErrorCode
from mlflow.tracking import MlflowClient

from pipeline.core.env import workspace_root

MAX_BATCH = 1000  # MLflow's log_batch limit for metrics
# how a store's database says a row is there already: SQLite, PostgreSQL, MySQL
DUPLICATE_ROW = ("UNIQUE constraint failed", "duplicate key value violates unique constraint", "Duplicate entry")
# MLflow 3's UI opens an experiment by its kind: a model-training one on the runs table (untagged
# ones may be taken for GenAI experiments and open on an empty traces overview)
EXPERIMENT_KIND, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
# A tracking server that went away must not stall training: MLflow's defaults retry each request
# 7 times with exponential backoff (minutes per call). Fail fast instead, keep what could not be
# delivered, and deliver it with the next call (runs/ holds every number regardless).
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")


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


def local_store_root() -> Path | None:
    """The workspace whose mlflow.db / mlruns/ hold the runs, when no MLFLOW_TRACKING_URI is set:
    the working directory, or the repository a DVC experiment's temporary copy was made from."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return None
    return workspace_root()


def is_server(tracking_uri: str) -> bool:
    """A tracking server (which may be away, or refuse), as opposed to a store on this machine."""
    return tracking_uri.startswith(("http://", "https://"))


def tracking_client() -> MlflowClient:
    root = local_store_root()
    if root is None:
        return MlflowClient()
    # Opening the store creates mlflow.db's tables when it is new: two stages starting at once (lanes,
    # queue workers) would both create them, and one fails ("table ... already exists"). One at a time.
    descriptor = os.open(root, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        return MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    finally:
        os.close(descriptor)  # and with it the lock


def study_experiment(client: MlflowClient, study: str) -> str:
    """The id of `study`'s MLflow experiment, made when missing (by whichever machine comes first)."""
    experiment = client.get_experiment_by_name(study)
    if experiment is None:
        root = local_store_root()
        try:
            return client.create_experiment(
                study, artifact_location=(root / "mlruns").as_uri() if root else None,  # not inside a temporary copy
                tags={EXPERIMENT_KIND: MODEL_TRAINING})
        except MlflowException as exc:
            if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                raise
            experiment = client.get_experiment_by_name(study)  # another machine made it meanwhile
    if experiment.tags.get(EXPERIMENT_KIND) != MODEL_TRAINING:  # made by an older ganlab
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND, MODEL_TRAINING)
    return experiment.experiment_id


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
        # what a tracking server that went away could not take yet: sent first by the next call
        self.pending_metrics: list[Metric] = []
        self.pending_tags: dict[str, str] = {}
        self.pending_artifacts: list[tuple[Path, str | None]] = []
        self.pending_images: list[tuple[Any, str, int]] = []  # (PIL image, key, step)
        self._said = False  # the "server not reachable" notice, once per run handle

    @classmethod
    def start(cls, study: str, run_name: str, *, params: Mapping[str, Any], tags: Mapping[str, str]) -> "Run":
        client = tracking_client()
        experiment_id = study_experiment(client, study)
        commit = git_commit()
        source = {"mlflow.source.type": "LOCAL", "mlflow.source.name": "stages/train.py",  # the UI's Source column
                  "mlflow.source.git.commit": commit, "mlflow.user": os.environ.get("USER", "ganlab")}
        run = client.create_run(experiment_id, run_name=run_name, tags={"git_commit": commit, **source, **tags})
        handle = cls(client, run.info.run_id)
        flat = [Param(k, str(v)[:6000]) for k, v in flatten(params).items()]
        for i in range(0, len(flat), 100):
            client.log_batch(handle.run_id, params=flat[i : i + 100])
        return handle

    @classmethod
    def reopen(cls, run_id: str, *, study: str | None = None, recreate=None) -> "Run":
        """Continue a run (resumed training, or evaluate logging into train's run).

        If the store no longer has it (mlflow.db deleted, another server) and `recreate` is given,
        carry on in a stand-in run of `study` tagged `recreated_from`: the one made earlier for the
        same run if there is one, else `recreate()` (which starts it and logs what the files on
        disk hold). Without `recreate` the MLflow error stands."""
        client = tracking_client()
        try:
            client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
            return cls(client, run_id)
        except MlflowException as exc:
            if recreate is None or exc.error_code != ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
                raise
        experiment = client.get_experiment_by_name(study) if study else None
        earlier = client.search_runs([experiment.experiment_id], f"tags.recreated_from = '{run_id}'",
                                     max_results=1) if experiment else []
        if earlier:
            return cls.reopen(earlier[0].info.run_id)
        print(f"ganlab: MLflow run {run_id} is not in the tracking store {client.tracking_uri}: "
              "logging into a new run tagged recreated_from (runs/ holds every number)", flush=True)
        run = recreate()
        run.set_tags({"recreated_from": run_id})
        return run

    def log_dataset(self, dataset, tags: list) -> None:
        """An MLflow dataset input (mlflow.entities.Dataset, with its InputTags) of the run."""
        from mlflow.entities import DatasetInput

        for attempt in range(5):
            try:
                self.client.log_inputs(self.run_id, datasets=[DatasetInput(dataset, tags)])
                return
            except MlflowException as exc:
                # two runs of one study starting at once on the same data: MLflow checks for the
                # dataset, then inserts it, and the slower one hits the other's row; once that row is
                # there, logging again links this run to it
                if not any(said in str(exc) for said in DUPLICATE_ROW) or attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))

    def log_metrics(self, values: Mapping[str, float], step: int) -> None:
        self.log_metric_rows([(step, values)])

    def log_metric_rows(self, rows: list[tuple[int, Mapping[str, float]]]) -> None:
        """Several steps' metrics in as few requests as MLflow allows (one per 1,000 values): a
        request per logged step would cost more than the training steps of a small model."""
        now = int(time.time() * 1000)
        self.pending_metrics += [Metric(k, float(v), now, step) for step, values in rows for k, v in values.items()]
        self.deliver()

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.pending_tags.update({k: str(v) for k, v in tags.items()})
        self.deliver()

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.pending_artifacts.append((Path(path), artifact_path))
        self.deliver()

    def log_image(self, path: Path, key: str, step: int) -> None:
        """An image at a training step: the run page shows a key's images on a step slider."""
        from PIL import Image

        with Image.open(path) as image:
            self.pending_images.append((image.copy(), key, step))  # the file moves when training ends
        self.deliver()

    def deliver(self) -> bool:
        """Send everything pending; True when nothing is left. With a tracking server that does
        not answer, keep it for the next call (said once) instead of failing the stage."""
        try:
            while self.pending_metrics:
                self.client.log_batch(self.run_id, metrics=self.pending_metrics[:MAX_BATCH])
                del self.pending_metrics[:MAX_BATCH]
            while self.pending_tags:
                key, value = next(iter(self.pending_tags.items()))
                self.client.set_tag(self.run_id, key, value)
                del self.pending_tags[key]
            while self.pending_artifacts:
                path, artifact_path = self.pending_artifacts[0]
                if path.is_dir():
                    self.client.log_artifacts(self.run_id, str(path), artifact_path)
                elif path.exists():
                    self.client.log_artifact(self.run_id, str(path), artifact_path)
                del self.pending_artifacts[0]
            while self.pending_images:
                image, key, step = self.pending_images[0]
                self.client.log_image(self.run_id, image, key=key, step=step, synchronous=True)
                del self.pending_images[0]
        except Exception as exc:
            if not self.unreachable(exc):
                raise
            if not self._said:
                print(f"ganlab: MLflow server {self.client.tracking_uri} not reachable ({type(exc).__name__}); "
                      "training goes on, its metrics are kept and sent when it answers again (runs/ holds "
                      "them all)", file=sys.stderr, flush=True)
                self._said = True
            return False
        return True

    @property
    def remote(self) -> bool:
        return is_server(str(self.client.tracking_uri))

    def unreachable(self, exc: Exception) -> bool:
        """`exc` says the tracking server went away (a local store never does): carry on without it."""
        return self.remote and _unreachable(exc)

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
        """Close the run; never FINISHED with something undelivered (it stays RUNNING, and the next
        stage that opens it, evaluate, delivers what is missing from runs/)."""
        if not self.deliver():
            print(f"ganlab: MLflow run {self.run_id} left RUNNING: the server did not take everything; "
                  "the evaluate stage sends what is missing", file=sys.stderr, flush=True)
            return
        try:
            self.client.set_terminated(self.run_id, status=status)
        except Exception as exc:
            if not self.unreachable(exc):
                raise
            print(f"ganlab: MLflow run {self.run_id} left RUNNING: the server did not answer", file=sys.stderr)


def _unreachable(exc: Exception) -> bool:
    """A tracking server that does not answer, or died while answering (as opposed to one that
    refuses a request)."""
    import requests

    if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                        requests.exceptions.ChunkedEncodingError, ConnectionError)):
        return True
    text = str(exc)
    return isinstance(exc, MlflowException) and any(
        s in text for s in ("Max retries exceeded", "Connection refused", "timed out", "Failed to establish",
                            "Connection broken", "Connection aborted", "RemoteDisconnected"))

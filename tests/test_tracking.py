"""Where runs are tracked: the user's workspace store, also from a DVC experiment's temporary copy."""
import multiprocessing
import os
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pipeline.tracking.run import Run, local_store_root
from pipeline.tracking.training import log_training_data


def test_a_queued_experiments_copy_logs_into_the_workspace_store(tmp_path, monkeypatch):
    """`dvc exp run --queue` runs stages in <repo>/.dvc/tmp/exps/<tmp>/, deleted afterwards: a store
    (or artifact folder) there would vanish with it, as it did (issue 14, F1)."""
    repo = tmp_path / "repo"
    copy = repo / ".dvc" / "tmp" / "exps" / "tmpab12cd"
    copy.mkdir(parents=True)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(copy)
    assert local_store_root() == repo.resolve()

    (copy / "grid.png").write_bytes(b"not really a png")
    run = Run.start("queued_study", "exp_a", params={"lr": 0.1}, tags={"experiment": "exp_a"})
    run.log_metrics({"fid": 12.0}, step=1)
    run.log_artifact(copy / "grid.png")
    run.end()
    assert not (copy / "mlflow.db").exists() and not (copy / "mlruns").exists()
    store = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    (found,) = store.search_runs([store.get_experiment_by_name("queued_study").experiment_id])
    assert found.data.metrics["fid"] == 12.0 and found.info.status == "FINISHED"
    assert Path(found.info.artifact_uri.removeprefix("file://")).is_relative_to(repo / "mlruns")
    assert [a.path for a in store.list_artifacts(found.info.run_id)] == ["grid.png"]


def test_a_lanes_copy_logs_into_the_workspace_store_too(tmp_path, monkeypatch):
    """tools/run_lanes.py runs stages in git worktrees under <repo>/.dvc/tmp/lanes/, removed afterwards."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    lane = tmp_path / "repo" / ".dvc" / "tmp" / "lanes" / "lane1" / "stages"
    lane.mkdir(parents=True)
    monkeypatch.chdir(lane.parent)
    assert local_store_root() == (tmp_path / "repo").resolve()


def _open_store_at_once(root: str, barrier) -> None:
    os.chdir(root)
    barrier.wait()  # every process opens the new store at the same moment
    from pipeline.tracking.run import tracking_client

    tracking_client().search_experiments()


def test_stages_opening_a_new_store_at_once_all_succeed(tmp_path, monkeypatch):
    """Two lanes' first trainings open a store that does not exist yet at the same moment: each
    creates its tables, and without taking turns one of them failed ("table ... already exists")."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    context = multiprocessing.get_context("fork")
    for attempt in range(3):
        root = tmp_path / f"store{attempt}"
        root.mkdir()
        barrier = context.Barrier(3)
        procs = [context.Process(target=_open_store_at_once, args=(str(root), barrier)) for _ in range(3)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(120)
        assert [proc.exitcode for proc in procs] == [0, 0, 0]


def test_the_workspace_is_the_store_outside_experiments_and_a_set_uri_wins(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert local_store_root() == tmp_path.resolve()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert local_store_root() is None


@pytest.mark.parametrize("collision", [
    "(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id, datasets.name, datasets.digest",
    '(psycopg.errors.UniqueViolation) duplicate key value violates unique constraint "dataset_pk"'],
    ids=["sqlite", "postgresql"])
def test_a_run_that_loses_the_race_to_insert_its_dataset_still_logs_it(tmp_path, monkeypatch, collision):
    """Two workers (dvc queue, two dvc repro, two machines) starting runs of one study on the same
    data at the same moment: MLflow checks for the dataset row, then inserts it, and the slower
    worker failed its training with `UNIQUE constraint failed: datasets...` (seen once with two dvc
    repro). Here the other worker's insert lands between this worker's check and insert, and the
    store's database says so in its words (a server's PostgreSQL in its own)."""
    from mlflow.exceptions import MlflowException

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    meta = {"content_hash": "ab" * 32, "source": "mnist", "channels": 1, "resolution": 28, "num_images": 10}
    other, run = Run.start("race", "other", params={}, tags={}), Run.start("race", "this", params={}, tags={})
    real, calls = run.client.log_inputs, []

    def other_worker_first(run_id, datasets=None, models=None):
        calls.append(run_id)
        if len(calls) == 1:  # the other worker inserts the row, then this insert collides
            real(other.run_id, datasets=datasets)
            raise MlflowException(collision)
        return real(run_id, datasets=datasets)

    monkeypatch.setattr(run.client, "log_inputs", other_worker_first)
    log_training_data(run, "mnist", meta)
    assert calls == [run.run_id, run.run_id]
    for run_id in (other.run_id, run.run_id):
        (logged,) = run.client.get_run(run_id).inputs.dataset_inputs
        assert (logged.dataset.name, logged.dataset.digest) == ("mnist", "ab" * 8)


def test_a_server_that_dies_mid_answer_counts_as_unreachable():
    """Killed while sending a response, the server leaves a broken chunked read, not a refused
    connection: training must carry on (as for a server that is down), not die."""
    from mlflow.exceptions import MlflowException

    from pipeline.tracking.run import _unreachable

    died = MlflowException("API request to http://127.0.0.1:1/api/2.0/mlflow/runs/log-batch failed with exception "
                           "('Connection broken: IncompleteRead(0 bytes read, 2 more expected)', IncompleteRead(0 bytes "
                           "read, 2 more expected))")
    assert _unreachable(died)
    assert not _unreachable(MlflowException("Run with id=0123 not found"))  # an answer: not to be ignored

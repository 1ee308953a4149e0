"""Where runs are tracked: the user's workspace store, also from a DVC experiment's temporary copy."""
from pathlib import Path

from mlflow.tracking import MlflowClient

from pipeline.tracking import Run, local_store_root


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


def test_the_workspace_is_the_store_outside_experiments_and_a_set_uri_wins(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert local_store_root() == tmp_path.resolve()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert local_store_root() is None

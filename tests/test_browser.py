"""MLflow's UI in a real browser: headless Chromium against `mlflow server` on 127.0.0.1 over the
store of a finished tiny training run. Skipped, with the reason, where Chromium is not installed
(`.ci/run` installs Debian's `chromium` when it runs as root)."""
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO_ROOT, free_port, start_mlflow_server, stop_mlflow_server
from tests.test_train import train_subprocess, workspace  # noqa: F401 (the fixture)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install chromium)")
# MLflow 3.17's UI starts in its GenAI mode whatever the experiment's kind; this is the link README gives
ML = "workflowType=machine_learning"


def chromium(url: str, *args: str) -> str:
    out = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1600,1000",
                          "--virtual-time-budget=40000", *args, url],
                         capture_output=True, text=True, timeout=240)
    return out.stdout


def rendered(url: str, *needles: str) -> str:
    """The page's DOM once the UI has rendered (a second look on a slow machine), for the asserts."""
    dom = chromium(url, "--dump-dom")
    if not all(n in dom for n in needles):
        dom = chromium(url, "--dump-dom")
    return dom


@pytest.fixture()
def server(workspace):  # noqa: F811
    """A finished 3-epoch MLP run in the workspace's store, served by `mlflow server` on loopback."""
    result = train_subprocess(workspace, "mlp")
    assert result.returncode == 0, result.stderr[-3000:]
    url, proc = start_mlflow_server(workspace, free_port(), env={"PYTHONPATH": str(REPO_ROOT)},
                                    store_uri=f"sqlite:///{workspace / 'mlflow.db'}")
    yield url
    stop_mlflow_server(proc)


def test_the_mlflow_ui_shows_the_runs_table_the_metrics_and_a_sample_grid(server, workspace):  # noqa: F811
    import mlflow

    client = mlflow.MlflowClient(server)
    (run,) = client.search_runs([client.get_experiment_by_name("t").experiment_id])
    experiment, run_id = run.info.experiment_id, run.info.run_id

    dataset = f"fmnist ({run.inputs.dataset_inputs[0].dataset.digest})"  # the Dataset column: name (digest)
    table = rendered(f"{server}/#/experiments/{experiment}/runs?{ML}", ">mlp<", dataset, "train.py")
    assert ">mlp<" in table, "the run is not in the runs table"
    assert dataset in table and "train.py" in table  # the Dataset and Source columns

    page = rendered(f"{server}/#/experiments/{experiment}/runs/{run_id}?{ML}", "Finished", "loss_d", "fid_cheap")
    assert "Finished" in page and "loss_d" in page and "fid_cheap" in page  # the run's metrics

    shot = workspace / "grid.png"
    chromium(f"{server}/#/experiments/{experiment}/runs/{run_id}/artifacts/samples/epoch_0003.png?{ML}",
             f"--screenshot={shot}")
    # the preview panel (right of the artifact tree): a rendered 8 x 8 grid of grey samples fills ~12%
    # of it with mid-grey pixels; the same panel holding text or nothing has under 1%
    panel = np.asarray(Image.open(shot).convert("L"))[200:800, 460:1150]
    assert ((panel > 40) & (panel < 215)).mean() > 0.05, "the sample grid did not render"

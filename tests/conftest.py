"""Shared fixtures: real data locations for tests, and an offline guard.

Tests never download anything: GANLAB_OFFLINE=1 makes every data source and weight loader
fail with a clear error instead of reaching the network.
"""
import contextlib
import os
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("GANLAB_OFFLINE", "1")


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """Real dataset copies for tests (see ../shared/datasets/README.md); path overridable by env."""
    path = Path(os.environ.get("GANLAB_SHARED_DATASETS", REPO_ROOT.parent / "shared" / "datasets"))
    if not path.is_dir():
        pytest.fail(f"shared test datasets not found at {path} (set GANLAB_SHARED_DATASETS)")
    return path


@pytest.fixture(scope="session")
def fashion_mnist_dir() -> Path:
    """Debian's dataset-fashion-mnist package (installed by .ci/run)."""
    path = Path("/usr/share/datasets/fashion-mnist")
    if not (path / "t10k-images-idx3-ubyte.gz").exists():
        pytest.fail(f"{path} missing: apt-get install -y dataset-fashion-mnist")
    return path


@contextlib.contextmanager
def study_workspace(root: Path, params: dict, data_dir: Path | None = None):
    """For module-scoped fixtures: `root` laid out like the repo root (params.yaml, every dataset
    prepared, a private MLflow store), with the working directory and environment set while inside.
    Yields the validated params."""
    from pipeline import data, layout
    from pipeline.config import load_params

    (root / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        if data_dir is not None:
            mp.setenv("GANLAB_DATA_DIRS", str(data_dir))
        mp.setenv("GANLAB_OFFLINE", "1")
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        loaded = load_params()
        for name, cfg in loaded.datasets.items():
            data.prepare_dataset(cfg, layout.prepared_dir(name))
        yield loaded

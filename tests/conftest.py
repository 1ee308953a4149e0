"""Shared fixtures: the real data embedded in the repository, and an offline guard.

Tests never download anything: GANLAB_OFFLINE=1 makes every data source and weight loader
fail with a clear error instead of reaching the network. They need nothing outside the
repository: the MNIST / Kuzushiji-MNIST / Fashion-MNIST test sets and the Oxygen icons ship in
data/embedded/ (see its README), and the data search path always includes that folder.
"""
import contextlib
from pathlib import Path

import pytest
import yaml

from pipeline.env import EMBEDDED_DIR

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("GANLAB_OFFLINE", "1")


@pytest.fixture(scope="session")
def embedded() -> Path:
    """data/embedded/: official MNIST, KMNIST and Fashion-MNIST test files, the K-49 class map, icons."""
    return EMBEDDED_DIR


ICONS64 = EMBEDDED_DIR / "oxygen-icons" / "64x64"  # 587 icons in 9 category folders
ICONS_APPS128 = EMBEDDED_DIR / "oxygen-icons" / "128x128" / "apps"  # 164 icons, no sub-folders


@contextlib.contextmanager
def study_workspace(root: Path, params: dict):
    """For module-scoped fixtures: `root` laid out like the repo root (params.yaml, every dataset
    prepared, a private MLflow store), with the working directory and environment set while inside.
    Yields the validated params."""
    from pipeline import data, layout
    from pipeline.config import load_params

    (root / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("GANLAB_OFFLINE", "1")
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        loaded = load_params()
        for name, cfg in loaded.datasets.items():
            data.prepare_dataset(cfg, layout.prepared_dir(name))
        yield loaded

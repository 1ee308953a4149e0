"""Helpers of the end-to-end tests: a fresh git + DVC repository holding a down-scaled copy of the
default params.yaml, commands run in it, and a real MLflow server on loopback."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT

# One experiment of each kind in the default studies (seed 0), plus a second loss and a second
# seed of the MLP GAN, so the report has something to compare.
KEPT = ["mlp_mnist_minimax_s0", "mlp_mnist_minimax_s1", "mlp_mnist_non_saturating_s0", "dcgan_fmnist32_hinge_s0",
        "acgan_kmnist5_s0", "projected_icons_s0", "improved_icons_mbd_s0"]


def down_scaled_default() -> dict:
    """The repository's params.yaml with the smoke profile and only the KEPT experiments (and the
    datasets they use): the same definitions, a few seconds each."""
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["profile"] = "smoke"
    params["experiments"] = {name: params["experiments"][name] for name in KEPT}
    used = {entry["dataset"] for entry in params["experiments"].values()}
    params["datasets"] = {name: ds for name, ds in params["datasets"].items() if name in used}
    params["metrics"]["classifier"]["width"] = 8
    return params


def study_repo(root: Path, params: dict) -> Path:
    """A fresh git + DVC repository holding what a clone holds (code, dvc.yaml, embedded data)."""
    repo = root / "study"
    repo.mkdir()
    for item in ("pipeline", "stages", "dvc.yaml", ".dvcignore", ".gitignore", ".dvc/config", ".dvc/plots",
                 "data/embedded"):
        src, dst = REPO_ROOT / item, repo / item
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, dst)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False, allow_unicode=True))
    sh(["git", "init", "-q"], repo, git_env())
    sh(["git", "add", "-A"], repo, git_env())
    sh(["git", "commit", "-qm", "study"], repo, git_env())
    return repo


def git_env(**extra) -> dict:
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t", "GANLAB_OFFLINE": "1", **extra}
    env.pop("PYTHONPATH", None)
    env.pop("GANLAB_DATA_DIRS", None)
    return env


DVC = [sys.executable, "-m", "dvc"]


def sh(args, cwd, env, check=True):
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=1200)
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result.stdout + result.stderr

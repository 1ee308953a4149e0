"""Where each stage reads and writes, relative to the repository root (the DVC working dir)."""
import json
import os
from dataclasses import dataclass
from pathlib import Path

PREPARED = Path("data/prepared")
RUNS = Path("runs")
RESULTS = Path("results")
CLASSIFIERS = Path("models/classifier")

# samples/ grids of a conditional model: one row per class (up to GRID_MAX_ROWS), one column per fixed z
GRID_COLUMNS = 8
GRID_MAX_ROWS = 64


def prepared_dir(dataset: str) -> Path:
    return PREPARED / dataset


def run_dir(experiment: str) -> Path:
    return RUNS / experiment


@dataclass(frozen=True)
class RunPaths:
    """The files of one run directory, runs/<experiment>/ (see pipeline.train for what each holds)."""

    root: Path

    @property
    def partial(self) -> Path:
        return self.root / ".partial"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def samples(self) -> Path:
        return self.root / "samples"

    @property
    def history(self) -> Path:
        return self.root / "history.csv"

    @property
    def steps(self) -> Path:
        return self.root / "steps.csv"

    @property
    def summary(self) -> Path:
        return self.root / "train.json"

    def outputs(self) -> list[Path]:
        return [self.checkpoints, self.samples, self.history, self.steps, self.summary]


def classifier_path(dataset: str) -> Path:
    """The dataset classifier's checkpoint; its test accuracy sits beside it as <dataset>.json."""
    return CLASSIFIERS / f"{dataset}.pt"


def save_torch_atomic(obj, path: Path) -> None:
    """torch.save via a temporary file and a rename: a killed stage never leaves half a checkpoint."""
    import torch  # deferred: the layout is read by stages that never load torch

    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def write_json_atomic(path: Path, payload: dict) -> None:
    """Write JSON via a temporary file and a rename: a killed stage never leaves half a file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True))
    os.replace(tmp, path)

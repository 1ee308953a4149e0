"""Where each stage reads and writes, relative to the repository root (the DVC working dir)."""
from pathlib import Path

PREPARED = Path("data/prepared")
RUNS = Path("runs")
RESULTS = Path("results")
CLASSIFIERS = Path("models/classifier")


def prepared_dir(dataset: str) -> Path:
    return PREPARED / dataset


def run_dir(experiment: str) -> Path:
    return RUNS / experiment


def classifier_path(dataset: str) -> Path:
    """The dataset classifier's checkpoint; its test accuracy sits beside it as <dataset>.json."""
    return CLASSIFIERS / f"{dataset}.pt"

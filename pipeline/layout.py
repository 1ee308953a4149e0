"""Where each stage reads and writes, relative to the repository root (the DVC working dir)."""
from pathlib import Path

PREPARED = Path("data/prepared")
RUNS = Path("runs")
RESULTS = Path("results")


def prepared_dir(dataset: str) -> Path:
    return PREPARED / dataset


def run_dir(experiment: str) -> Path:
    return RUNS / experiment

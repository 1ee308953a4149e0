"""runs/<experiment>/: every file of one run, named here and nowhere else.

The train stage writes a run into its staging folder ``.partial/`` (not a DVC output, so `dvc
repro` keeps it for a resume) and publishes it all at once; evaluate adds metrics.json and
classes.json; tracking logs the files; the report reads them::

    checkpoints/last.pt  checkpoints/best.pt   final and best-FID G and D (pipeline.train.checkpoint)
    history.csv  steps.csv                     one row per epoch / per `log_every` iterations
    samples/epoch_NNNN.png  samples/progress.gif   grids from one fixed z
    train.json                                 training summary (epochs, best epoch, MLflow run id, times)
    metrics.json  classes.json                 evaluate's metrics and per-class details
    headline.json                              evaluate's headline numbers (`dvc metrics show runs/*/headline.json`)
    .partial/  resume.pt run.json last.pt best.pt + the files above, while training

Light on purpose (no torch): the report and the stages that never train read it.
"""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path


RUNS = Path("runs")  # relative to the repository root, like every stage path (pipeline.core.layout)


@dataclass(frozen=True)
class _TrainingFiles:
    """What a training writes, the same names in the staging folder and in the published run."""

    root: Path

    @property
    def samples(self) -> Path:
        return self.root / "samples"

    def grid(self, epoch: int) -> Path:
        return self.samples / f"epoch_{epoch:04d}.png"

    def grids(self) -> list[Path]:
        return sorted(self.samples.glob("epoch_*.png"))

    @property
    def progress_gif(self) -> Path:
        return self.samples / "progress.gif"

    @property
    def history(self) -> Path:
        return self.root / "history.csv"

    @property
    def steps(self) -> Path:
        return self.root / "steps.csv"

    @property
    def summary(self) -> Path:
        return self.root / "train.json"


class Staging(_TrainingFiles):
    """runs/<experiment>/.partial/: a training in progress, its resume state and MLflow run id."""

    @property
    def resume(self) -> Path:
        return self.root / "resume.pt"

    @property
    def run_record(self) -> Path:
        return self.root / "run.json"

    @property
    def last(self) -> Path:
        return self.root / "last.pt"

    @property
    def best(self) -> Path:
        return self.root / "best.pt"


class RunDir(_TrainingFiles):
    """runs/<experiment>/ as the train and evaluate stages publish it."""

    @classmethod
    def of(cls, experiment: str, runs_root: Path = RUNS) -> RunDir:
        return cls(Path(runs_root) / experiment)

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best.pt"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def classes(self) -> Path:
        return self.root / "classes.json"

    @property
    def headline(self) -> Path:
        return self.root / "headline.json"

    @property
    def staging(self) -> Staging:
        return Staging(self.root / ".partial")

    def training_outputs(self) -> list[Path]:
        """The train stage's DVC outputs (dvc.yaml lists the same)."""
        return [self.checkpoints, self.samples, self.history, self.steps, self.summary]

    def publish(self, weights: bool) -> None:
        """Move the staging folder's files into the training outputs once all are written (a killed
        run never leaves half of them), replacing an earlier training's; `weights`: a finished run's
        checkpoints (a diverged run publishes its tables and summary only)."""
        staging = self.staging
        for out in self.training_outputs():
            if out.is_dir():
                shutil.rmtree(out)
            elif out.exists():
                out.unlink()
        self.checkpoints.mkdir(parents=True)
        if weights:
            os.replace(staging.last, self.last)
            os.replace(staging.best, self.best)
        os.replace(staging.samples, self.samples)
        for made, published in ((staging.history, self.history), (staging.steps, self.steps),
                                (staging.summary, self.summary)):
            os.replace(made, published)
        shutil.rmtree(staging.root)

    def set_aside_staging(self) -> Path:
        """Move a staging folder that cannot be read out of the way, kept for the user; returns where."""
        aside = self.root / f".partial-damaged-{time.strftime('%Y%m%dT%H%M%S')}"
        os.replace(self.staging.root, aside)
        return aside

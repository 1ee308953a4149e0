"""One training loop for every model family: epochs of steps (pipeline.train.step) over the
training set held on the device; everything else (tracking, progress, checkpoints and resume,
monitoring, publishing runs/<experiment>/, fault injection) is done by callbacks
(pipeline.train.callbacks) at named points.

Resumption is exact on the CPU: every epoch draws its data order, latents and dropout masks
from generators seeded by (seed, epoch), so restarting at an epoch boundary replays the same
random stream without having to save RNG states.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pipeline import nets
from pipeline.core import phases, registry
from pipeline.core.config import ExperimentConfig, MetricsConfig
from pipeline.core.env import pick_device, pick_precision
from pipeline.core.errors import TrainingDiverged
from pipeline.core.rundir import RunDir
from pipeline.data.prepare import Prepared
from pipeline.train import callbacks, distributed, step
from pipeline.train.checkpoint import Architecture
from pipeline.train.monitor import EpochMonitor
from pipeline.train.build import build_nets, objective_terms, training_images

RUNAWAY_LOSS = 1e6  # |D or G loss| beyond this (GAN losses are O(1)-O(100)): diverged, even if still finite
PRETRAIN_SEED_OFFSET = 7919  # pre-training epochs draw from their own random streams


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch) % (2**63)


@dataclass
class LoopState:
    """Where training is; with the nets, optimisers and terms, what a resumed run restores."""

    pretrain_epoch: int = 0  # class-head pre-training epochs completed
    epoch: int = 0  # GAN epochs completed
    global_step: int = 0  # GAN iterations completed
    history: list[dict] = field(default_factory=list)  # history.csv's rows
    steps: list[dict] = field(default_factory=list)  # steps.csv's rows
    best: dict = field(default_factory=lambda: {"epoch": 0, "score": math.inf})  # lowest fid_cheap so far
    run_id: str | None = None  # the MLflow run


class Trainer:
    """One experiment's data, nets, terms and loop state; `fit()` trains it to the end."""

    def __init__(self, name: str, cfg: ExperimentConfig, prepared: Prepared, paths: RunDir, *,
                 metrics_cfg: MetricsConfig, classifier_path: Path | None = None,
                 tracking_tags: dict | None = None, tracking_params: dict | None = None):
        self.name, self.cfg, self.paths = name, cfg, paths
        self.world = distributed.world()  # rank 0 of 1 unless started by torchrun
        self.device = distributed.process_device(pick_device(cfg.device))
        n_critic = cfg.n_critic or registry.LOSSES[cfg.loss].n_critic
        images, labels = training_images(name, cfg, prepared, n_critic)
        self.images, self.labels = images.to(self.device), labels.to(self.device)  # uint8, resident; batches are index slices
        self.monitor = EpochMonitor(name, cfg, prepared, images, labels, metrics_cfg=metrics_cfg,
                                    classifier_path=classifier_path, device=self.device)  # grids, cheap metrics
        self.terms = objective_terms(cfg, self.images, self.labels, self.device)
        self.stat_names = step.stat_names(self.terms)
        distributed.check_distributable(name, cfg.batch_size, self.terms)
        num_classes = len(prepared.meta.get("classes", []))
        self.arch = Architecture.of(cfg, images.shape[1], images.shape[2], num_classes)
        self.nets = build_nets(cfg, self.arch, self.device)
        self.settings = step.StepSettings.of(cfg, n_critic=n_critic, conditional=nets.FAMILIES[cfg.model].conditional,
                                             num_classes=num_classes, precision=pick_precision(cfg.precision, self.device))
        self.state = LoopState()
        self.summary: dict = {}  # train.json's, once published (by rank 0)
        self.callbacks = callbacks.for_process(self.world, data_meta=prepared.meta, tags=tracking_tags or {},
                                               params=tracking_params or {})

    @property
    def pretraining(self) -> bool:
        return self.state.pretrain_epoch < self.cfg.pretrain_classifier_epochs

    def fit(self) -> dict:
        """Train (resuming an unfinished attempt) to the last epoch; train.json's summary ({} off rank 0)."""
        self._call("setup")
        self._call("on_fit_start")
        try:
            while self.pretraining:
                self._pretrain_epoch()
            while self.state.epoch < self.cfg.epochs:
                self._epoch()
        except BaseException as exc:
            self._call("on_failure", exc)
            raise
        self._call("on_fit_end")
        return self.summary

    def publish_diverged(self, error: str) -> dict:
        """After `fit` raised TrainingDiverged: the run published as a result (train.json says
        `status: diverged`, with the epochs logged before it and no weights)."""
        self._call("on_diverged", error)
        return self.summary

    def train_step(self, real_uint8: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One iteration (pipeline.train.step) of this training's nets; stats in `stat_names` order."""
        return step.train_step(self.nets, self.terms, self.settings, real_uint8, labels,
                               g_updates=self.state.global_step, draw=distributed.global_draw)

    def _pretrain_epoch(self) -> None:
        cfg, epoch = self.cfg, self.state.pretrain_epoch + 1
        order = epoch_order(epoch_seed(cfg.seed + PRETRAIN_SEED_OFFSET, epoch), len(self.images), self.device)
        n_steps = len(self.images) // cfg.batch_size
        total = torch.zeros(2, device=self.device)
        self.nets.D.train()
        self._call("on_epoch_start", n_steps)
        for i in range(n_steps):
            idx = distributed.local_batch(order[i * cfg.batch_size : (i + 1) * cfg.batch_size], 1)
            with phases.timed("steps"):
                total += step.pretrain_step(self.nets, self.settings, self.images[idx], self.labels[idx])
            self._call("on_step_end", None)
        self._call("on_steps_end")
        loss, acc = distributed.mean_over_ranks(total / n_steps).tolist()
        if not math.isfinite(loss):
            raise TrainingDiverged(f"{self.name}: class loss not finite in pre-training epoch {epoch}")
        self.state.pretrain_epoch = epoch
        self._call("on_pretrain_epoch_end", loss, acc)
        self._call("on_checkpoint")

    def _epoch(self) -> None:
        cfg, state, epoch = self.cfg, self.state, self.state.epoch + 1
        order = epoch_order(epoch_seed(cfg.seed, epoch), len(self.images), self.device)
        per_step = cfg.batch_size * self.settings.n_critic  # real images one iteration consumes
        n_steps = len(self.images) // per_step
        epoch_sum = torch.zeros(len(self.stat_names), device=self.device)
        window_sum, window_n = torch.zeros_like(epoch_sum), 0
        started = time.perf_counter()
        self.nets.G.train()
        self.nets.D.train()
        self._call("on_epoch_start", n_steps)
        for i in range(n_steps):
            idx = distributed.local_batch(order[i * per_step : (i + 1) * per_step], self.settings.n_critic)
            with phases.timed("steps"):
                stats = self.train_step(self.images[idx], self.labels[idx])
            epoch_sum += stats
            window_sum += stats
            window_n += 1
            state.global_step += 1
            logged = None
            if state.global_step % cfg.log_every == 0:
                logged = self._checked(window_sum / window_n, epoch)
                state.steps.append({"step": state.global_step, "epoch": epoch, **logged})
                window_sum.zero_()
                window_n = 0
            self._call("on_step_end", logged)
        self._call("on_steps_end")
        row = self._checked(epoch_sum / n_steps, epoch)
        row["epoch_time_s"] = time.perf_counter() - started  # training only: metrics and grids excluded
        row["train_time_s"] = row["epoch_time_s"] + (state.history[-1]["train_time_s"] if state.history else 0.0)
        row["images_seen"] = state.global_step * per_step  # real images D has seen
        for term in self.terms:
            row.update(term.epoch_stats())
        state.epoch = epoch
        self._call("on_measure", row)
        # wall clock of the whole epoch (training, grid, metrics), summed over sittings like train_time_s
        row["wall_time_s"] = time.perf_counter() - started + (state.history[-1].get("wall_time_s", 0.0)
                                                              if state.history else 0.0)
        state.history.append({"epoch": epoch, "step": state.global_step, **row})
        self._call("on_epoch_end", row)
        if epoch % cfg.checkpoint_every == 0 or epoch == cfg.epochs:
            self._call("on_checkpoint")

    def _checked(self, means: torch.Tensor, epoch: int) -> dict:
        """The statistics' means by name, with the terms' derived ones; TrainingDiverged if they say so."""
        row = dict(zip(self.stat_names, distributed.mean_over_ranks(means).tolist()))  # the only host sync
        what = divergence(row)
        for term in self.terms:
            row.update(term.derived_stats(row))
        if what:
            resume, done = self.paths.staging.resume, self.state.epoch
            kept = (f"last good checkpoint kept at {resume} (epoch {done})" if done and resume.exists()
                    else "no checkpoint was written before it (it diverged in its first epoch)")
            raise TrainingDiverged(f"{self.name}: {what} in epoch {epoch} (step {self.state.global_step}): the run "
                                   f"diverged (lower lr_g / lr_d, or change the loss); {kept}")
        return row

    def _call(self, hook: str, *args) -> None:
        for callback in self.callbacks:
            with phases.timed(type(callback).__name__):  # where a run's time goes (pipeline.core.phases)
                getattr(callback, hook)(self, *args)


def divergence(row: dict) -> str | None:
    """What says a row of statistics' means comes from a diverged run, if anything does."""
    bad = [k for k, v in row.items() if not math.isfinite(v)]
    if bad:
        return f"{', '.join(bad)} not finite"
    runaway = [k for k in ("loss_d", "loss_g") if abs(row[k]) > RUNAWAY_LOSS]
    if runaway:
        return ", ".join(f"{k} = {row[k]:.3g}" for k in runaway) + f" (beyond +-{RUNAWAY_LOSS:.0e})"
    return None


def epoch_order(seed: int, n_images: int, device: torch.device) -> torch.Tensor:
    """Seed every random stream of an epoch (data order, latents, dropout, label noise) from `seed`;
    the epoch's order of the images."""
    torch.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed_all(seed)
    return torch.randperm(n_images, generator=torch.Generator().manual_seed(seed)).to(device)

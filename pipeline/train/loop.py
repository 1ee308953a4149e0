"""One training loop for every model family.

Its outputs are runs/<experiment>/ (pipeline.core.rundir: the files, and the staging folder ``.partial/``
that makes a killed run leave no half-written outputs and lets the next run of the stage resume
from its last checkpoint if it was made with the same resolved config). history.csv has one row
per epoch: the STAT_NAMES diagnostics, time, and every eval_every epochs IS / FID with the
experiment's cheap extractor (is_cheap, fid_cheap) against held-out real images where the dataset
has them (so the best checkpoint is not chosen on the images the final metrics compare with);
with the dataset classifier, its class coverage and confidence and a conditional model's
conditional accuracy (classes_covered_cheap, confidence_cheap, cond_acc_cheap). steps.csv has the
same columns every `log_every` iterations.

Resumption is exact on the CPU: every epoch draws its data order, latents and dropout masks
from generators seeded by (seed, epoch), so restarting at an epoch boundary replays the same
random stream without having to save RNG states.
"""
from __future__ import annotations

import contextlib
import copy
import csv
import json
import math
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from pipeline.train import distributed
from pipeline.core import registry
from pipeline import nets
from pipeline.core import progress
from pipeline.core.config import ExperimentConfig, MetricsConfig
from pipeline.data.prepare import Prepared
from pipeline.core.env import code_version, machine, pick_device, pick_precision
from pipeline.core.errors import ConfigError, TrainingDiverged
from pipeline.train.checkpoint import Architecture, contents
from pipeline.core.layout import atomic_write, save_torch_atomic, write_json_atomic
from pipeline.train.monitor import EpochMonitor
from pipeline.core.rundir import RunDir
from pipeline.nets.sampling import sample_z, to_unit_range
from pipeline.train.terms import DStep, GStep, TrainingContext, terms_for
from pipeline.tracking.run import NoRun, Run

# Per-iteration diagnostics. d_real / d_fake: mean sigmoid(D logit), i.e. D(x) and D(G(z)) for the
# BCE losses; logit_*: the raw outputs; g_out_grad_norm: G's gradient at its output layer;
# d_loss_low: share of D updates whose loss fell below d_loss_threshold (D wins outright, the
# regime where the saturating G loss stops giving gradient).
STAT_NAMES = ("loss_d", "d_real", "d_fake", "logit_real", "logit_fake", "loss_g", "g_grad_norm", "g_out_grad_norm",
              "d_loss_low")
RUNAWAY_LOSS = 1e6  # |D or G loss| beyond this (GAN losses are O(1)-O(100)): diverged, even if still finite
PRETRAIN_SEED_OFFSET = 7919  # pre-training epochs draw from their own random streams
FAULT_ENV = "GANLAB_FAULT_KILL_AT_STEP"  # test hook: SIGKILL this process after that many optimiser steps
                                          # (pre-training steps first, then GAN steps)


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch) % (2**63)


class Trainer:
    """Holds the nets, optimisers and loop state of one experiment; `fit()` runs it to the end."""

    def __init__(self, name: str, cfg: ExperimentConfig, prepared: Prepared, run_dir: Path, *,
                 metrics_cfg: MetricsConfig, classifier_path: Path | None = None,
                 tracking_tags: dict | None = None, tracking_params: dict | None = None):
        self.name, self.cfg, self.paths = name, cfg, RunDir(Path(run_dir))
        self.tracking_tags, self.tracking_params = tracking_tags or {}, tracking_params or {}
        self.world = distributed.world()  # rank 0 of 1 unless started by torchrun
        self.device = pick_device(cfg.device)
        if self.device.type == "cuda" and self.world.distributed:
            self.device = torch.device("cuda", self.world.local_rank)
        self.cuda = self.device.type == "cuda"
        self.precision = pick_precision(cfg.precision, self.device)  # a resumed run keeps its own
        self.loss = registry.LOSSES[cfg.loss]

        images, labels = prepared.images, prepared.labels
        self.data_meta = prepared.meta  # logged as the MLflow run's dataset input
        if cfg.max_train_images and cfg.max_train_images < len(images):
            keep = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[: cfg.max_train_images]
            images, labels = images[keep.sort().values], labels[keep.sort().values]
        n_critic = cfg.n_critic or self.loss.n_critic
        if len(images) < cfg.batch_size * n_critic:
            raise ConfigError(
                f"{name}: one iteration takes batch_size {cfg.batch_size} x n_critic {n_critic} = "
                f"{cfg.batch_size * n_critic} real images, but dataset '{cfg.dataset}' has {len(images)} to train on: "
                f"lower batch_size in experiments.{name} (or defaults), or give the dataset more images")
        self.images = images.to(self.device)  # uint8, resident; batches are index slices
        self.labels = labels.to(self.device)
        _, self.channels, self.resolution, _ = images.shape
        self.num_classes = len(prepared.meta.get("classes", []))
        self.family = nets.FAMILIES[cfg.model]
        self.monitor = EpochMonitor(name, cfg, prepared, images, labels, metrics_cfg=metrics_cfg,
                                    classifier_path=classifier_path, device=self.device)  # grids, cheap metrics
        # the objective's parts this experiment asks for (pipeline.train.terms), and the statistics they log
        self.terms = terms_for(TrainingContext(cfg, self.family, self.family.Options(**cfg.model_args), self.loss,
                                               self.images, self.labels, self._inputs, self.device))
        self.stat_names = STAT_NAMES + tuple(name for term in self.terms for name in term.stats)
        if self.world.distributed:
            self._check_distributable(cfg)
        self.n_critic = n_critic

        self.arch = Architecture.of(cfg, self.channels, self.resolution, self.num_classes)
        self.G, self.D = self.arch.build(seed=cfg.seed)  # identical initial weights for a given seed
        if self.world.distributed:  # batch norm over the global batch, before the optimisers see the parameters
            self.G = distributed.sync_batchnorm(self.G, self.device)
            self.D = distributed.sync_batchnorm(self.D, self.device)
        last = [m for m in self.G.modules() if any(True for _ in m.parameters(recurse=False))][-1]
        self.g_output_params = list(last.parameters())  # G's output layer, for its own gradient norm
        # channels_last suits both cuDNN and oneDNN convolutions (measured ~1.1-1.3x on this CPU too)
        self.G.to(self.device, memory_format=torch.channels_last)
        self.D.to(self.device, memory_format=torch.channels_last)
        # D's trainable parameters: a frozen part (ProjectedGAN's projector) is never optimised or unfrozen
        self.d_params = [p for p in self.D.parameters() if p.requires_grad]
        adam = {"fused": True} if self.cuda else {}
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.lr_g, betas=cfg.betas_g, **adam)
        self.opt_d = torch.optim.Adam(self.d_params, lr=cfg.lr_d, betas=cfg.betas_d, **adam)
        # EMA of G's weights (used for samples, metrics and the saved G when enabled)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False) if cfg.ema_decay else None
        # what the steps call: the nets, or their DDP wrappers, which average gradients over the processes.
        # G's step runs D unwrapped: it needs gradients through D, not D's own (DDP would wait for them).
        self.g_step, self.d_step, self.d_for_g = self.G, self.D, self.D
        if self.world.distributed:
            self.g_step = distributed.data_parallel(self.G, self.device)
            self.d_step = distributed.data_parallel(self.D, self.device, some_unused=cfg.pretrain_classifier_epochs > 0)
        if cfg.compile:
            self.g_step, self.d_step, self.d_for_g = (torch.compile(m) for m in (self.g_step, self.d_step, self.D))

        self.pretrain_epoch = 0  # class-head pre-training epochs completed
        self.epoch = 0  # GAN epochs completed
        self.global_step = 0
        self.history: list[dict] = []
        self.steps: list[dict] = []
        self.best = {"epoch": 0, "score": math.inf}
        self.run_id: str | None = None
        self.logged = {"epoch": -1, "step": -1}  # last epoch / iteration the MLflow run already holds
        self.fault_step = int(os.environ.get(FAULT_ENV, "0") or 0)

    # ----- checkpoints -------------------------------------------------------------------
    def _state(self) -> dict:
        return contents(self.cfg, self.arch, G=self.sampler.state_dict(), D=self.D.state_dict(), epoch=self.epoch,
                        pretrain_epoch=self.pretrain_epoch, precision=self.precision)

    def _resume_state(self) -> dict:
        return {
            **self._state(), "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
            "G_train": self.G.state_dict(), "terms": [term.state() for term in self.terms],
            "global_step": self.global_step, "history": self.history, "steps": self.steps,
            "best": self.best, "run_id": self.run_id,
        }

    def try_resume(self) -> bool:
        path = self.paths.staging.resume
        if not path.exists():
            return False
        try:
            state = torch.load(path, map_location=self.device, weights_only=False)
            best = self.paths.staging.best
            if best.exists():  # read once now, so a damaged copy is never published as the best checkpoint
                torch.load(best, map_location="cpu", weights_only=False)
        except Exception as exc:  # truncated / corrupted by a crash of the disk, not by us (writes are atomic)
            if not self.world.is_main:  # rank 0 read it first and set it aside: never here
                return False
            aside = self.paths.set_aside_staging()
            tqdm.write(f"{self.name}: the saved training state cannot be read ({type(exc).__name__}: "
                       f"{str(exc).splitlines()[0][:200]}); moved to {aside} and training starts again from "
                       "the beginning (delete that folder once you no longer need it)", file=sys.stderr)
            return False
        if state.get("fingerprint") != self.cfg.fingerprint():
            if not self.world.is_main:
                return False
            tqdm.write(f"{self.name}: discarding a partial run made with other settings", file=sys.stderr)
            shutil.rmtree(self.paths.staging.root)
            return False
        if state["precision"] != self.precision:
            if self.world.is_main:
                tqdm.write(f"{self.name}: resuming in {state['precision']}, the precision the run started in "
                           f"(`precision: {self.cfg.precision}` gives {self.precision} here)", file=sys.stderr)
            self.precision = state["precision"]
        self.G.load_state_dict(state["G_train"])
        if self.G_ema is not None:
            self.G_ema.load_state_dict(state["G"])
        for term, term_state in zip(self.terms, state["terms"]):
            term.load_state(term_state)
        self.D.load_state_dict(state["D"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.epoch, self.pretrain_epoch, self.global_step = state["epoch"], state["pretrain_epoch"], state["global_step"]
        self.history, self.steps, self.best, self.run_id = state["history"], state["steps"], state["best"], state["run_id"]
        where = f"epoch {self.epoch}" if self.epoch or not self.pretrain_epoch else f"pre-training epoch {self.pretrain_epoch}"
        if self.world.is_main:
            tqdm.write(f"{self.name}: resuming after {where}"
                       + (f" in {self.world.size} processes" if self.world.distributed else ""), file=sys.stderr)
        return True

    @property
    def sampler(self) -> torch.nn.Module:
        """The generator that draws samples and is evaluated: the EMA copy when enabled."""
        return self.G_ema if self.G_ema is not None else self.G

    def ema_decay_now(self) -> float:
        """The configured EMA decay, warmed up as (1 + n) / (10 + n) over the first n G updates:
        with a constant 0.999 a short run's EMA generator would still be ~90% its random init
        after 100 steps (samples and metrics of a flat grey image)."""
        n = self.global_step
        return min(self.cfg.ema_decay, (1 + n) / (10 + n))

    def _update_ema(self) -> None:
        with torch.no_grad():
            ema, live = list(self.G_ema.parameters()), list(self.G.parameters())
            torch._foreach_lerp_(ema, live, 1.0 - self.ema_decay_now())
            for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
                b_ema.copy_(b)

    # ----- one iteration ---------------------------------------------------------------------
    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def _inputs(self, real_uint8: torch.Tensor) -> torch.Tensor:
        x = to_unit_range(real_uint8)
        return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x

    def _global_draw(self, draw, n: int) -> torch.Tensor:
        """`draw(n * processes)`, this process's slice of it: every process draws the global batch's
        random numbers from the same stream, as a one-process run does, and keeps its part."""
        return distributed.rank_slice(draw(n * self.world.size))

    def _latents(self, n: int) -> torch.Tensor:
        return self._global_draw(lambda total: sample_z(total, self.cfg, device=self.device), n)

    def _local_batch(self, idx: torch.Tensor, batches: int) -> torch.Tensor:
        """This process's share of the image indices of `batches` global batches (all of them with one)."""
        if not self.world.distributed:
            return idx
        return torch.cat([distributed.rank_slice(part) for part in idx.chunk(batches)])

    def _check_distributable(self, cfg: ExperimentConfig) -> None:
        """Settings a DDP run cannot honour, named before any work starts."""
        processes = self.world.size
        if cfg.batch_size % processes:
            raise ConfigError(f"{self.name}: batch_size {cfg.batch_size} does not split evenly over {processes} "
                              f"processes: use a batch_size divisible by {processes}, or --nproc_per_node that "
                              f"divides {cfg.batch_size}")
        for term in self.terms:
            if term.not_distributable:
                raise ConfigError(f"{self.name}: {term.not_distributable}: train it with one process")

    def train_step(self, real_uint8: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One iteration: n_critic D updates (one per batch of `real_uint8`, which holds n_critic
        batches), then one G update on the last D update's generated batch. Returns the
        iteration's stats (in `stat_names` order) as one device tensor: no host sync.

        Conditional families get the real labels with the real images and, for the generated ones,
        the same labels (`fake_labels: batch`) or uniformly drawn ones. The losses are the terms'
        (pipeline.train.terms).
        """
        d_stats = []
        for x_u8, y in zip(real_uint8.chunk(self.n_critic), labels.chunk(self.n_critic)):
            x = self._inputs(x_u8)
            fake, y_fake, stats = self._d_update(x, y)
            d_stats.append(stats)
        stats = {k: torch.stack([s[k] for s in d_stats]).mean() for k in d_stats[0]}
        if self.cfg.d_step_inference_mode:  # D's batch came from G in inference mode: G's step needs its own
            with self.autocast():
                fake = self.g_step(self._latents(len(x)), y_fake)
        stats.update(self._g_update(fake, y_fake, x))
        return torch.stack([stats[name] for name in self.stat_names])

    def _d_update(self, x: torch.Tensor, labels: torch.Tensor):
        """(generated batch, its labels, D's stats by name)."""
        z = self._latents(len(x))
        if not self.family.conditional:
            y_fake = None
        elif self.cfg.fake_labels == "batch":  # G draws the classes this real batch holds
            y_fake = labels
        else:
            y_fake = self._global_draw(lambda n: torch.randint(0, self.num_classes, (n,), device=self.device), len(x))
        inference_mode = self.cfg.d_step_inference_mode
        if inference_mode:
            self.G.eval()
            self.D.eval()
        with self.autocast(), torch.no_grad() if inference_mode else contextlib.nullcontext():
            fake = self.g_step(z, y_fake)
        with self.autocast():
            real_out = self.d_step(self._d_input(x), labels)
            fake_out = self.d_step(self._d_input(fake.detach()), y_fake)
            step = DStep(x, labels, fake, y_fake, real_out, fake_out, real_out.logits.float(), fake_out.logits.float(),
                         d=self.d_step, draw=self._global_draw)
            loss_d = None
            for term in self.terms:
                loss_d = term.d_loss(step, loss_d)
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        if inference_mode:
            self.G.train()
            self.D.train()
        for term in self.terms:
            term.after_d_update(step)
        loss_d = loss_d.detach()
        real_logits, fake_logits = step.real_logits.detach(), step.fake_logits.detach()
        stats = {**step.stats, "loss_d": loss_d, "d_real": torch.sigmoid(real_logits).mean(),
                 "d_fake": torch.sigmoid(fake_logits).mean(), "logit_real": real_logits.mean(),
                 "logit_fake": fake_logits.mean(), "d_loss_low": (loss_d < self.cfg.d_loss_threshold).float()}
        return fake, y_fake, {k: v.detach() for k, v in stats.items()}

    def _d_input(self, images: torch.Tensor) -> torch.Tensor:
        """What D sees of any image: the terms' transforms (augmentation), in order."""
        for term in self.terms:
            images = term.d_input(images)
        return images

    def _g_update(self, fake: torch.Tensor, y_fake: torch.Tensor | None, real: torch.Tensor) -> dict:
        """G's stats by name: loss_g, its gradient norm (all parameters) and at its output layer."""
        for p in self.d_params:  # G's step needs gradients through D, not D's own
            p.requires_grad_(False)
        with self.autocast():
            step = GStep(self.d_for_g(self._d_input(fake), y_fake), fake, y_fake, real, d=self.d_for_g,
                         d_input=self._d_input)
            loss_g = sum(value for term in self.terms for value in term.g_loss(step).values())
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        for p in self.d_params:
            p.requires_grad_(True)
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in self.G.parameters() if p.grad is not None])
        out_norm = torch.nn.utils.get_total_norm([p.grad for p in self.g_output_params if p.grad is not None])
        self.opt_g.step()
        if self.G_ema is not None:
            self._update_ema()
        return {**step.stats, "loss_g": loss_g.detach(), "g_grad_norm": grad_norm.detach().float(),
                "g_out_grad_norm": out_norm.detach().float()}

    def pretrain_step(self, real_uint8: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """D's class head (and trunk) on real images only; returns (class loss, accuracy) on the device."""
        with self.autocast():
            logits = self.d_step(self._inputs(real_uint8), labels).class_logits.float()
            loss = F.cross_entropy(logits, labels)
        self.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_d.step()
        return torch.stack([loss.detach(), (logits.argmax(1) == labels).float().mean()])

    # ----- loop ----------------------------------------------------------------------------
    def fit(self) -> dict:
        started_before = self._started_run_id()  # read first: try_resume may discard the partial run
        # first: a stale partial run is deleted, not written into. Rank 0 sets aside or deletes what
        # cannot be resumed before the other processes read what is left.
        if self.world.is_main:
            self.try_resume()
        distributed.barrier()
        if not self.world.is_main:
            self.try_resume()
        self.paths.staging.samples.mkdir(parents=True, exist_ok=True)
        run = self._open_run(started_before) if self.world.is_main else NoRun()
        self.sitting = (time.perf_counter(), self.epoch)  # for the ETA: this sitting's pace
        self.epochs_bar = progress.bar(total=self.cfg.epochs, initial=self.epoch, desc=f"{self.name} epochs",
                                       unit="epoch", quiet=not self.world.is_main, position=0)
        try:
            while self.pretrain_epoch < self.cfg.pretrain_classifier_epochs:
                self._pretrain_epoch(run)
            while self.epoch < self.cfg.epochs:
                self._run_epoch(run)
        except BaseException as exc:
            run.set_tags({"failure": f"{type(exc).__name__}: {exc}"[:5000]})
            run.end("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
            raise
        self.epochs_bar.close()
        if not self.world.is_main:  # rank 0 writes the outputs
            return {}
        summary = self._finish(run)
        run.end("FINISHED")
        return summary

    def _open_run(self, started_before: str | None) -> Run:
        """The MLflow run of this training: the resumed one, or a new one (superseding a killed attempt's)."""
        if self.run_id:
            run = Run.reopen(self.run_id, study=self.cfg.study, recreate=self._recreated_run)
            self.run_id = run.run_id  # another one if the store lost it
            # what the killed process logged after its last checkpoint is not logged twice
            self.logged = {"epoch": run.last_step("loss_d"), "step": run.last_step("step/loss_d")}
            return run
        run = self._start_run({"supersedes": started_before} if started_before else {})
        self.run_id = run.run_id
        write_json_atomic(self.paths.staging.run_record, {"mlflow_run_id": run.run_id})
        if started_before:  # killed before its first checkpoint, or its state discarded
            Run(run.client, started_before).supersede(run.run_id, "restarted from the beginning")
        return run

    def _start_run(self, tags: dict) -> Run:
        run = Run.start(self.cfg.study, self.name, params=self.tracking_params,
                        tags={**self.tracking_tags, "precision": self.precision, **tags})
        try:
            run.log_training_data(self.cfg.dataset, self.data_meta)
        except BaseException as exc:  # not left RUNNING: fit() has not taken charge of the run yet
            run.set_tags({"failure": f"{type(exc).__name__}: {exc}"[:5000]})
            run.end("FAILED")
            raise
        return run

    def _recreated_run(self) -> Run:
        """A new MLflow run for a resumed training whose run the store lost, holding the epochs
        and iterations logged so far."""
        run = self._start_run({})
        run.log_training_tables(self.history, self.steps)
        return run

    def _started_run_id(self) -> str | None:
        """The MLflow run an earlier, unfinished attempt of this training started (if any)."""
        path = self.paths.staging.run_record
        return json.loads(path.read_text())["mlflow_run_id"] if path.exists() else None

    def _epoch_order(self, seed: int) -> torch.Tensor:
        """Seed every random stream of an epoch (data order, latents, dropout, label noise) from `seed`."""
        torch.manual_seed(seed)
        if self.cuda:
            torch.cuda.manual_seed_all(seed)
        return torch.randperm(len(self.images), generator=torch.Generator().manual_seed(seed)).to(self.device)

    def _pretrain_epoch(self, run: Run) -> None:
        cfg, epoch = self.cfg, self.pretrain_epoch + 1
        order = self._epoch_order(epoch_seed(cfg.seed + PRETRAIN_SEED_OFFSET, epoch))
        n_steps = len(self.images) // cfg.batch_size
        total = torch.zeros(2, device=self.device)
        self.D.train()
        for i in progress.bar(range(n_steps), desc=f"{self.name} pre-train D {epoch}/{cfg.pretrain_classifier_epochs}",
                              unit="it", quiet=not self.world.is_main):
            idx = self._local_batch(order[i * cfg.batch_size : (i + 1) * cfg.batch_size], 1)
            total += self.pretrain_step(self.images[idx], self.labels[idx])
            self._fault_point((epoch - 1) * n_steps + i + 1)
        loss, acc = distributed.mean_over_ranks(total / n_steps).tolist()
        if not math.isfinite(loss):
            raise TrainingDiverged(f"{self.name}: class loss not finite in pre-training epoch {epoch}")
        self.pretrain_epoch = epoch
        run.log_metrics({"pretrain/class_loss": loss, "pretrain/class_acc": acc}, epoch)
        if self.world.is_main:
            progress.line(f"{self.name} pre-train epoch {epoch}/{cfg.pretrain_classifier_epochs}: class loss "
                          f"{loss:.4g}, accuracy {acc:.3f}")
            save_torch_atomic(self._resume_state(), self.paths.staging.resume)

    def _run_epoch(self, run: Run) -> None:
        cfg, epoch = self.cfg, self.epoch + 1
        order = self._epoch_order(epoch_seed(cfg.seed, epoch))
        per_step = cfg.batch_size * self.n_critic  # real images one iteration consumes
        n_steps = len(self.images) // per_step
        epoch_sum = torch.zeros(len(self.stat_names), device=self.device)
        window_sum, window_n = torch.zeros_like(epoch_sum), 0
        step_rows: list[tuple[int, dict]] = []
        started = time.perf_counter()
        self.G.train()
        self.D.train()
        bar = progress.bar(total=n_steps, desc=f"{self.name} {epoch}/{cfg.epochs}", unit="it", quiet=not self.world.is_main)
        for i in range(n_steps):
            idx = self._local_batch(order[i * per_step : (i + 1) * per_step], self.n_critic)
            stats = self.train_step(self.images[idx], self.labels[idx])
            epoch_sum += stats
            window_sum += stats
            window_n += 1
            self.global_step += 1
            bar.update()
            if self.global_step % cfg.log_every == 0:
                row = self._check_finite(window_sum / window_n, epoch)
                self.steps.append({"step": self.global_step, "epoch": epoch, **row})
                step_rows.append((self.global_step, {f"step/{k}": v for k, v in row.items()}))
                bar.set_postfix(loss_d=f"{row['loss_d']:.3f}", loss_g=f"{row['loss_g']:.3f}")
                window_sum.zero_()
                window_n = 0
            self._fault_point(self.cfg.pretrain_classifier_epochs * n_steps + self.global_step)
        bar.close()
        # the epoch's iteration diagnostics in one request
        run.log_metric_rows([(step, row) for step, row in step_rows if step > self.logged["step"]])
        row = self._check_finite(epoch_sum / n_steps, epoch)
        row["epoch_time_s"] = time.perf_counter() - started  # training only: metrics and grids excluded
        row["train_time_s"] = row["epoch_time_s"] + (self.history[-1]["train_time_s"] if self.history else 0.0)
        row["images_seen"] = self.global_step * per_step  # real images D has seen
        for term in self.terms:
            row.update(term.epoch_stats())
        self.epoch = epoch
        if self.world.is_main:  # grids, metrics, checkpoints: rank 0's (the nets are the same in every process)
            self.monitor.save_grid(self.sampler, self.paths.staging.grid(epoch))
            if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
                row.update(self.monitor.metrics(self.sampler))
                if row["fid_cheap"] < self.best["score"]:
                    self.best = {"epoch": epoch, "score": row["fid_cheap"]}
                    save_torch_atomic(self._state(), self.paths.staging.best)
        # wall clock of the whole epoch (training, grid, metrics), summed over sittings like train_time_s
        row["wall_time_s"] = time.perf_counter() - started + (self.history[-1].get("wall_time_s", 0.0) if self.history else 0.0)
        self.history.append({"epoch": epoch, "step": self.global_step, **row})
        if epoch > self.logged["epoch"]:  # (run is NoRun on the other ranks: rank 0 alone logs)
            run.log_metrics(row, epoch)
            run.log_image(self.paths.staging.grid(epoch), "samples", epoch)
        if self.world.is_main:
            self._report_progress(row)
            if epoch % cfg.checkpoint_every == 0 or epoch == cfg.epochs:
                self._write_tables()
                save_torch_atomic(self._resume_state(), self.paths.staging.resume)

    def _report_progress(self, row: dict) -> None:
        """The epochs bar on a terminal; a line per epoch in a log (DVC's output, CI)."""
        shown = {k: row[k] for k in ("loss_d", "loss_g", "fid_cheap", "is_cheap", "cond_acc_cheap") if k in row}
        self.epochs_bar.update()
        self.epochs_bar.set_postfix({k: f"{v:.3g}" for k, v in shown.items()})
        started, first_epoch = self.sitting
        eta = progress.eta(self.epoch - first_epoch, self.cfg.epochs - first_epoch, time.perf_counter() - started)
        progress.line(f"{self.name} epoch {self.epoch}/{self.cfg.epochs}: "
                      + " ".join(f"{k} {v:.4g}" for k, v in shown.items())
                      + f" ({row['epoch_time_s']:.1f} s{'; ' + eta if eta else ''})")

    def _fault_point(self, steps_done: int) -> None:
        """Fault injection for the resume tests: die like a killed job, with no chance to clean up."""
        if self.fault_step and steps_done == self.fault_step:
            os.kill(os.getpid(), signal.SIGKILL)

    def _check_finite(self, means: torch.Tensor, epoch: int) -> dict:
        values = distributed.mean_over_ranks(means).tolist()  # the only host sync: every log_every steps and per epoch
        row = dict(zip(self.stat_names, values))
        bad = [k for k, v in row.items() if not math.isfinite(v)]
        for term in self.terms:
            row.update(term.derived_stats(row))
        runaway = [k for k in ("loss_d", "loss_g") if k not in bad and abs(row[k]) > RUNAWAY_LOSS]
        if bad or runaway:
            what = (f"{', '.join(bad)} not finite" if bad else
                    ", ".join(f"{k} = {row[k]:.3g}" for k in runaway) + f" (beyond +-{RUNAWAY_LOSS:.0e})")
            resume = self.paths.staging.resume
            kept = (f"last good checkpoint kept at {resume} (epoch {self.epoch})" if self.epoch and resume.exists()
                    else "no checkpoint was written before it (it diverged in its first epoch)")
            raise TrainingDiverged(f"{self.name}: {what} in epoch {epoch} (step {self.global_step}): the run "
                                   f"diverged (lower lr_g / lr_d, or change the loss); {kept}")
        return row

    def _write_tables(self) -> None:
        for rows, path in ((self.history, self.paths.staging.history), (self.steps, self.paths.staging.steps)):
            atomic_write(path, lambda tmp, rows=rows: _write_csv(tmp, rows))

    def _finish(self, run: Run) -> dict:
        staging = self.paths.staging
        final = self._state()
        for term in self.terms:
            final.update(term.checkpoint_extras(self))
        save_torch_atomic(final, staging.last)
        if not staging.best.exists():
            atomic_write(staging.best, lambda tmp: shutil.copyfile(staging.last, tmp))
        frames = [Image.open(p) for p in staging.grids()]
        frames[0].save(staging.progress_gif, save_all=True, append_images=frames[1:], duration=300, loop=0)
        summary = self._summary(
            best_epoch=self.best["epoch"], best_fid_cheap=self.best["score"],
            cheap_extractor=self.cfg.cheap_extractor, cheap_reference=self.monitor.reference,
            pretrain_epochs=self.pretrain_epoch, num_train_images=len(self.images), device=self.device.type,
            precision=self.precision,
            processes=self.world.size)  # > 1: DDP under torchrun (the last sitting's count, if resumed)
        self._publish(summary, weights=True)
        run.set_tags({"best_epoch": str(self.best["epoch"]), "processes": str(self.world.size)})
        run.log_training_artifacts(self.paths)
        run.log_generators(self.paths)
        return summary

    def _summary(self, **specific) -> dict:
        """train.json: what every run records (finished or diverged), then what is `specific` to it."""
        last = self.history[-1] if self.history else {}
        return {
            "experiment": self.name, "epochs": self.epoch, "steps": self.global_step,
            "fingerprint": self.cfg.fingerprint(),  # the resolved config it was trained with (the report checks)
            "train_time_s": last.get("train_time_s", 0.0), "wall_time_s": last.get("wall_time_s"),
            "code_version": code_version(), "machine": machine(self.device), "mlflow_run_id": self.run_id,
            **specific,
        }

    def publish_diverged(self, error: str) -> dict:
        """A diverged run (after `fit` raised TrainingDiverged) published as a result: train.json
        says `status: diverged` with the error, the epochs logged before it are kept, no weights.
        Evaluate and the report then list it as failed while the other experiments' stages go on;
        DVC caches it like any result, and changed settings train it again from the start."""
        if not self.world.is_main:  # rank 0 publishes it
            return {}
        self.paths.staging.samples.mkdir(parents=True, exist_ok=True)
        summary = self._summary(status="diverged", error=error)
        self._publish(summary, weights=False)
        return summary

    def _publish(self, summary: dict, weights: bool) -> None:
        """train.json and the tables into the staging folder, then all of it into the outputs."""
        write_json_atomic(self.paths.staging.summary, summary, sort_keys=False)
        self._write_tables()
        self.paths.publish(weights)


def _write_csv(path: Path, rows: list[dict]) -> None:
    columns = list(dict.fromkeys(k for row in rows for k in row)) or ["step"]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)

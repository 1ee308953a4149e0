"""Everything a training does besides stepping, each a small object the loop (pipeline.train.loop)
calls at the named points of `Callback`, in the order `for_process` lists them.

A callback gets the trainer and reads what it needs of it (its state, nets, paths, settings);
the step and the terms never see a callback. Rank 0 of a DDP run alone tracks, reports,
measures and writes (the nets are the same in every process); every process resumes and obeys
the fault hook.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from pipeline.core import cores, progress
from pipeline.core.env import code_version, machine
from pipeline.core.layout import atomic_write, save_torch_atomic, write_json_atomic
from pipeline.train import distributed, step
from pipeline.train.checkpoint import contents
from pipeline.tracking.run import Run
from pipeline.tracking.training import (log_generators, log_training_artifacts, log_training_data,
                                        log_training_tables)

FAULT_ENV = "GANLAB_FAULT_KILL_AT_STEP"  # test hook: SIGKILL this process after that many optimiser steps
                                          # (pre-training steps first, then GAN steps)


class Callback:
    """The loop's named points, in the order they come; each does nothing unless overridden."""

    def setup(self, trainer) -> None:
        """Before anything is restored (a resume may discard an unfinished attempt's files)."""

    def on_fit_start(self, trainer) -> None:
        """Before the first epoch; a resumed run's state is restored by then (Resume comes first)."""

    def on_epoch_start(self, trainer, n_steps: int) -> None:
        """An epoch of `n_steps` steps begins (of the class head's pre-training, or of the GAN)."""

    def on_step_end(self, trainer, logged: dict | None) -> None:
        """After each step; `logged`: the statistics of the steps since the last logged one, when this
        step logs them (every log_every GAN steps)."""

    def on_steps_end(self, trainer) -> None:
        """An epoch's steps are done (before its statistics are checked)."""

    def on_pretrain_epoch_end(self, trainer, class_loss: float, class_acc: float) -> None:
        """A pre-training epoch's means over the processes."""

    def on_measure(self, trainer, row: dict) -> None:
        """Measure the nets after a GAN epoch: what is added to `row` joins the epoch's history row."""

    def on_epoch_end(self, trainer, row: dict) -> None:
        """A GAN epoch's row, as history.csv has it (without its epoch and step)."""

    def on_checkpoint(self, trainer) -> None:
        """Save what resuming needs: after each pre-training epoch, every checkpoint_every epochs and the last."""

    def on_fit_end(self, trainer) -> None:
        """Every epoch is done: the final outputs."""

    def on_failure(self, trainer, exc: BaseException) -> None:
        """An epoch raised (divergence, an interruption); `fit` raises it again afterwards."""

    def on_diverged(self, trainer, error: str) -> None:
        """Record a diverged run as a result (called after `fit` raised TrainingDiverged)."""


def for_process(world: distributed.World, *, data_meta: dict, tags: dict, params: dict) -> list[Callback]:
    """This process's callbacks, in the order each hook calls them: Resume first (the others start
    from the restored state), Tracking after Publishing (it logs the published files), the fault
    last (a step is killed once the others have seen it). `tags`, `params`: the MLflow run's
    (pipeline.tracking.training.run_identity)."""
    fault = [FaultInjection(int(os.environ[FAULT_ENV]))] if os.environ.get(FAULT_ENV) else []
    if not world.is_main:
        return [Resume(in_charge=False), *fault]
    return [Resume(in_charge=True), Progress(), Monitoring(), Checkpointing(), Publishing(),
            Tracking(data_meta, tags, params), CoreShare(), *fault]


# ----- what checkpoints and tables hold -----------------------------------------------------------
def weights(trainer) -> dict:
    """A checkpoint (pipeline.train.checkpoint): G (the EMA copy when enabled), D and where training is."""
    nets, state = trainer.nets, trainer.state
    return contents(trainer.cfg, trainer.arch, G=nets.sampler.state_dict(), D=nets.D.state_dict(), epoch=state.epoch,
                    pretrain_epoch=state.pretrain_epoch, precision=trainer.settings.precision)


def resume_state(trainer) -> dict:
    """A checkpoint with all a killed run needs to carry on exactly: optimisers, G's live weights,
    the terms' state and the loop's."""
    nets, state = trainer.nets, trainer.state
    return {
        **weights(trainer), "opt_g": nets.opt_g.state_dict(), "opt_d": nets.opt_d.state_dict(),
        "G_train": nets.G.state_dict(), "terms": [term.state() for term in trainer.terms],
        "global_step": state.global_step, "history": state.history, "steps": state.steps,
        "best": state.best, "run_id": state.run_id,
    }


def load_resume_state(trainer, saved: dict) -> None:
    """The nets, optimisers, terms and loop state as `resume_state` saved them."""
    nets = trainer.nets
    nets.G.load_state_dict(saved["G_train"])
    if nets.G_ema is not None:
        nets.G_ema.load_state_dict(saved["G"])
    for term, term_state in zip(trainer.terms, saved["terms"]):
        term.load_state(term_state)
    nets.D.load_state_dict(saved["D"])
    nets.opt_g.load_state_dict(saved["opt_g"])
    nets.opt_d.load_state_dict(saved["opt_d"])
    trainer.state = replace(trainer.state, **{k: saved[k] for k in (
        "pretrain_epoch", "epoch", "global_step", "history", "steps", "best", "run_id")})


def write_tables(state, files) -> None:
    """history.csv and steps.csv of the rows so far."""
    for rows, path in ((state.history, files.history), (state.steps, files.steps)):
        atomic_write(path, lambda tmp, rows=rows: _write_csv(tmp, rows))


def _write_csv(path: Path, rows: list[dict]) -> None:
    columns = list(dict.fromkeys(k for row in rows for k in row)) or ["step"]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


# ----- the callbacks --------------------------------------------------------------------------------
class Resume(Callback):
    """Carries on from an unfinished attempt's saved state when it was made with the same resolved
    config. Rank 0 (`in_charge`) reads it first, sets aside a damaged one or discards one made with
    other settings, and says what it does; the other processes then read what is left."""

    def __init__(self, in_charge: bool):
        self.in_charge = in_charge

    def on_fit_start(self, trainer) -> None:
        distributed.in_turn(lambda: self.restore(trainer))
        trainer.paths.staging.samples.mkdir(parents=True, exist_ok=True)

    def restore(self, trainer) -> None:
        staging, name = trainer.paths.staging, trainer.name
        if not staging.resume.exists():
            return
        try:
            saved = torch.load(staging.resume, map_location=trainer.device, weights_only=False)
            if staging.best.exists():  # read once now, so a damaged copy is never published as the best checkpoint
                torch.load(staging.best, map_location="cpu", weights_only=False)
        except Exception as exc:  # truncated / corrupted by a crash of the disk, not by us (writes are atomic)
            if self.in_charge:
                aside = trainer.paths.set_aside_staging()
                tqdm.write(f"{name}: the saved training state cannot be read ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0][:200]}); moved to {aside} and training starts again from "
                           "the beginning (delete that folder once you no longer need it)", file=sys.stderr)
            return
        if saved.get("fingerprint") != trainer.cfg.fingerprint():
            if self.in_charge:
                tqdm.write(f"{name}: discarding a partial run made with other settings", file=sys.stderr)
                shutil.rmtree(staging.root)
            return
        if saved["precision"] != trainer.settings.precision:
            if self.in_charge:
                tqdm.write(f"{name}: resuming in {saved['precision']}, the precision the run started in "
                           f"(`precision: {trainer.cfg.precision}` gives {trainer.settings.precision} here)",
                           file=sys.stderr)
            trainer.settings = replace(trainer.settings, precision=saved["precision"])
        load_resume_state(trainer, saved)
        if self.in_charge:
            state = trainer.state
            where = f"epoch {state.epoch}" if state.epoch or not state.pretrain_epoch else \
                f"pre-training epoch {state.pretrain_epoch}"
            processes = trainer.world.size
            tqdm.write(f"{name}: resuming after {where}" + (f" in {processes} processes" if processes > 1 else ""),
                       file=sys.stderr)


class Progress(Callback):
    """The epochs bar (with this sitting's ETA) and each epoch's steps bar on a terminal; a line per
    epoch in a log (DVC's output, CI)."""

    def on_fit_start(self, trainer) -> None:
        self.sitting = (time.perf_counter(), trainer.state.epoch)  # for the ETA: this sitting's pace
        self.epochs_bar = progress.bar(total=trainer.cfg.epochs, initial=trainer.state.epoch,
                                       desc=f"{trainer.name} epochs", unit="epoch", position=0)

    def on_epoch_start(self, trainer, n_steps: int) -> None:
        state, cfg = trainer.state, trainer.cfg
        which = (f"pre-train D {state.pretrain_epoch + 1}/{cfg.pretrain_classifier_epochs}" if trainer.pretraining
                 else f"{state.epoch + 1}/{cfg.epochs}")
        self.steps_bar = progress.bar(total=n_steps, desc=f"{trainer.name} {which}", unit="it")

    def on_step_end(self, trainer, logged: dict | None) -> None:
        self.steps_bar.update()
        if logged is not None:
            self.steps_bar.set_postfix(loss_d=f"{logged['loss_d']:.3f}", loss_g=f"{logged['loss_g']:.3f}")

    def on_steps_end(self, trainer) -> None:
        self.steps_bar.close()

    def on_pretrain_epoch_end(self, trainer, class_loss: float, class_acc: float) -> None:
        progress.line(f"{trainer.name} pre-train epoch {trainer.state.pretrain_epoch}/"
                      f"{trainer.cfg.pretrain_classifier_epochs}: class loss {class_loss:.4g}, accuracy {class_acc:.3f}")

    def on_epoch_end(self, trainer, row: dict) -> None:
        shown = {k: row[k] for k in ("loss_d", "loss_g", "fid_cheap", "is_cheap", "cond_acc_cheap") if k in row}
        self.epochs_bar.update()
        self.epochs_bar.set_postfix({k: f"{v:.3g}" for k, v in shown.items()})
        started, first_epoch = self.sitting
        epoch, epochs = trainer.state.epoch, trainer.cfg.epochs
        eta = progress.eta(epoch - first_epoch, epochs - first_epoch, time.perf_counter() - started)
        progress.line(f"{trainer.name} epoch {epoch}/{epochs}: " + " ".join(f"{k} {v:.4g}" for k, v in shown.items())
                      + f" ({row['epoch_time_s']:.1f} s{'; ' + eta if eta else ''})")

    def on_fit_end(self, trainer) -> None:
        self.epochs_bar.close()


class Monitoring(Callback):
    """Every epoch a sample grid; every eval_every epochs (and the last) the cheap metrics
    (pipeline.train.monitor), and best.pt when their FID is the lowest so far."""

    def on_measure(self, trainer, row: dict) -> None:
        state, cfg, staging = trainer.state, trainer.cfg, trainer.paths.staging
        trainer.monitor.save_grid(trainer.nets.sampler, staging.grid(state.epoch))
        if state.epoch % cfg.eval_every == 0 or state.epoch == cfg.epochs:
            row.update(trainer.monitor.metrics(trainer.nets.sampler))
            if row["fid_cheap"] < state.best["score"]:
                state.best = {"epoch": state.epoch, "score": row["fid_cheap"]}
                save_torch_atomic(weights(trainer), staging.best)


class Checkpointing(Callback):
    """resume.pt (with the tables so far) at checkpoints; at the end last.pt, with what the terms
    add for their evaluation, and best.pt as a copy of it when no epoch was measured."""

    def on_checkpoint(self, trainer) -> None:
        if trainer.state.epoch:  # tables of GAN epochs: none while the class head pre-trains
            write_tables(trainer.state, trainer.paths.staging)
        save_torch_atomic(resume_state(trainer), trainer.paths.staging.resume)

    def on_fit_end(self, trainer) -> None:
        staging, settings = trainer.paths.staging, trainer.settings
        final = weights(trainer)
        for term in trainer.terms:
            final.update(term.checkpoint_extras(
                fresh_d=lambda: trainer.arch.build(seed=trainer.cfg.seed)[1],
                d_updates=trainer.state.global_step * settings.n_critic,
                autocast=lambda: step.autocast(settings.precision, trainer.device)))
        save_torch_atomic(final, staging.last)
        if not staging.best.exists():
            atomic_write(staging.best, lambda tmp: shutil.copyfile(staging.last, tmp))


class Publishing(Callback):
    """train.json and the tables into the staging folder, then all of it into runs/<experiment>/ at
    once (pipeline.core.rundir): a finished run with its weights and progress GIF; a diverged run
    with its tables and the error, no weights (evaluate and the report list it as failed, DVC
    caches it like any result, and changed settings train it again from the start)."""

    def on_fit_end(self, trainer) -> None:
        state, staging = trainer.state, trainer.paths.staging
        frames = [Image.open(p) for p in staging.grids()]
        frames[0].save(staging.progress_gif, save_all=True, append_images=frames[1:], duration=300, loop=0)
        self.publish(trainer, weights=True, best_epoch=state.best["epoch"], best_fid_cheap=state.best["score"],
                     cheap_extractor=trainer.cfg.cheap_extractor, cheap_reference=trainer.monitor.reference,
                     pretrain_epochs=state.pretrain_epoch, num_train_images=len(trainer.images),
                     device=trainer.device.type, precision=trainer.settings.precision,
                     processes=trainer.world.size)  # > 1: DDP under torchrun (the last sitting's count, if resumed)

    def on_diverged(self, trainer, error: str) -> None:
        trainer.paths.staging.samples.mkdir(parents=True, exist_ok=True)
        self.publish(trainer, weights=False, status="diverged", error=error)

    def publish(self, trainer, weights: bool, **specific) -> None:
        """train.json: what every run records, then what is `specific` to it."""
        state, staging = trainer.state, trainer.paths.staging
        last = state.history[-1] if state.history else {}
        trainer.summary = {
            "experiment": trainer.name, "epochs": state.epoch, "steps": state.global_step,
            "fingerprint": trainer.cfg.fingerprint(),  # the resolved config it was trained with (the report checks)
            "train_time_s": last.get("train_time_s", 0.0), "wall_time_s": last.get("wall_time_s"),
            "code_version": code_version(), "machine": machine(trainer.device), "mlflow_run_id": state.run_id,
            **specific,
        }
        write_json_atomic(staging.summary, trainer.summary, sort_keys=False)
        write_tables(state, staging)
        trainer.paths.publish(weights)


class Tracking(Callback):
    """The training's MLflow run (pipeline.tracking): a new one, superseding the run of an attempt
    killed before its first checkpoint; or the resumed training's own, without logging twice what
    the killed process logged after its checkpoint. Every epoch's metrics and sample grid, the
    iterations' in one request per epoch, the files and generators at the end; on a failure the
    error, and FAILED (KILLED when interrupted)."""

    def __init__(self, data_meta: dict, tags: dict, params: dict):
        self.data_meta, self.tags, self.params = data_meta, tags, params
        self.logged = {"epoch": -1, "step": -1}  # the last epoch / iteration the run already holds
        self.step_rows: list[tuple[int, dict]] = []  # this epoch's iterations, logged when its steps are done

    def setup(self, trainer) -> None:
        record = trainer.paths.staging.run_record  # read before a resume may discard the partial run
        self.started_before = json.loads(record.read_text())["mlflow_run_id"] if record.exists() else None

    def on_fit_start(self, trainer) -> None:
        state = trainer.state
        if state.run_id:
            self.run = Run.reopen(state.run_id, study=trainer.cfg.study, recreate=lambda: self.recreated(trainer))
            state.run_id = self.run.run_id  # another one if the store lost it
            self.logged = {"epoch": self.run.last_step("loss_d"), "step": self.run.last_step("step/loss_d")}
            return
        earlier = self.started_before
        self.run = self.start(trainer, {"supersedes": earlier} if earlier else {})
        state.run_id = self.run.run_id
        write_json_atomic(trainer.paths.staging.run_record, {"mlflow_run_id": self.run.run_id})
        if earlier:  # killed before its first checkpoint, or its state discarded
            Run(self.run.client, earlier).supersede(self.run.run_id, "restarted from the beginning")

    def start(self, trainer, tags: dict) -> Run:
        run = Run.start(trainer.cfg.study, trainer.name, params=self.params,
                        tags={**self.tags, "precision": trainer.settings.precision, **tags})
        try:
            log_training_data(run, trainer.cfg.dataset, self.data_meta)
        except BaseException as exc:  # not left RUNNING: fit() has not taken charge of the run yet
            run.set_tags(failure(exc))
            run.end("FAILED")
            raise
        return run

    def recreated(self, trainer) -> Run:
        """A new MLflow run for a resumed training whose run the store lost, holding the epochs
        and iterations logged so far."""
        run = self.start(trainer, {})
        log_training_tables(run, trainer.state.history, trainer.state.steps)
        return run

    def on_step_end(self, trainer, logged: dict | None) -> None:
        if logged is not None:
            self.step_rows.append((trainer.state.global_step, {f"step/{k}": v for k, v in logged.items()}))

    def on_steps_end(self, trainer) -> None:
        self.run.log_metric_rows([(step, row) for step, row in self.step_rows if step > self.logged["step"]])
        self.step_rows = []

    def on_pretrain_epoch_end(self, trainer, class_loss: float, class_acc: float) -> None:
        self.run.log_metrics({"pretrain/class_loss": class_loss, "pretrain/class_acc": class_acc},
                             trainer.state.pretrain_epoch)

    def on_epoch_end(self, trainer, row: dict) -> None:
        epoch = trainer.state.epoch
        if epoch > self.logged["epoch"]:
            self.run.log_metrics(row, epoch)
            self.run.log_image(trainer.paths.staging.grid(epoch), "samples", epoch)

    def on_fit_end(self, trainer) -> None:
        self.run.set_tags({"best_epoch": str(trainer.state.best["epoch"]), "processes": str(trainer.world.size)})
        log_training_artifacts(self.run, trainer.paths)
        log_generators(self.run, trainer.paths)
        self.run.end("FINISHED")

    def on_failure(self, trainer, exc: BaseException) -> None:
        self.run.set_tags(failure(exc))
        self.run.end("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")


def failure(exc: BaseException) -> dict:
    return {"failure": f"{type(exc).__name__}: {exc}"[:5000]}


class CoreShare(Callback):
    """Every few seconds, this training's share of the cores again (pipeline.core.cores): a stage
    that started or ended beside it changes how many torch threads it should take."""

    EVERY_S = 5.0

    def setup(self, trainer) -> None:
        self.next_check = time.monotonic() + self.EVERY_S

    def on_step_end(self, trainer, logged: dict | None) -> None:
        if time.monotonic() < self.next_check:
            return
        self.next_check = time.monotonic() + self.EVERY_S
        changed = cores.rebalance()
        if changed:
            tqdm.write(f"ganlab: {trainer.name}: {changed}", file=sys.stderr)


class FaultInjection(Callback):
    """For the resume tests: die like a killed job, with no chance to clean up, once the optimiser
    steps (pre-training steps first, then GAN steps) reach FAULT_ENV's number."""

    def __init__(self, at_step: int):
        self.at_step = at_step

    def on_epoch_start(self, trainer, n_steps: int) -> None:
        self.n_steps, self.done_in_epoch = n_steps, 0

    def on_step_end(self, trainer, logged: dict | None) -> None:
        self.done_in_epoch += 1
        state = trainer.state
        steps_done = (state.pretrain_epoch * self.n_steps + self.done_in_epoch if trainer.pretraining
                      else trainer.cfg.pretrain_classifier_epochs * self.n_steps + state.global_step)
        if steps_done == self.at_step:
            os.kill(os.getpid(), signal.SIGKILL)

"""DVC stage train@<experiment>: train one GAN, write runs/<experiment>/ (resumes if interrupted).

    python -m stages.train EXPERIMENT
    torchrun --standalone --nproc_per_node N -m stages.train EXPERIMENT   # DDP, see pipeline/train/distributed.py
    (or `processes: N` in the experiment, which the first form turns into the second)
"""
import sys

from pipeline.data import prepare as data
from pipeline.train import distributed
from pipeline.core import layout, phases
from pipeline.core.config import Params, load_params, resolve_experiment
from pipeline.core.env import pick_device
from pipeline.core.errors import TrainingDiverged
from pipeline.tracking.access import check_write_access
from pipeline.tracking.training import run_identity
from pipeline.train.loop import Trainer
from pipeline.core.rundir import RunDir


def train(name: str, params: Params | None = None) -> dict:
    params = params or load_params()
    cfg = resolve_experiment(params, name)
    check_write_access([cfg.study])  # before any work: a server that refuses the run says so now
    device = pick_device(cfg.device)
    if cfg.processes > 1 and not distributed.launched_by_torchrun():
        distributed.relaunch(cfg.processes, device, ["stages.train", name])  # does not return
    distributed.start(device)  # a no-op without torchrun
    try:
        with phases.timed("setup"):  # the data, nets, optimisers, the monitor's classifier
            prepared = data.load_prepared(layout.prepared_dir(cfg.dataset))
            tags, logged_params = run_identity(params, name, cfg, prepared.meta)
            trainer = Trainer(name, cfg, prepared, RunDir.of(name), metrics_cfg=params.metrics,
                              classifier_path=layout.classifier_path(cfg.dataset),
                              tracking_tags=tags, tracking_params=logged_params)
        try:
            return trainer.fit()
        except TrainingDiverged as exc:  # a result, not a crash: the rest of `dvc repro` goes on
            if trainer.world.is_main:
                print(f"ganlab: {exc}\nganlab: {name} is recorded as a failed run (runs/{name}/train.json, MLflow "
                      f"status FAILED); the other experiments and the report go on", file=sys.stderr)
            return trainer.publish_diverged(str(exc))
    finally:
        distributed.stop()


if __name__ == "__main__":
    from stages._cli import run

    run(train, "python -m stages.train EXPERIMENT  (or: torchrun --nproc_per_node N -m stages.train EXPERIMENT)")

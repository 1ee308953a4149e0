"""DVC stage train@<experiment>: train one GAN, write runs/<experiment>/ (resumes if interrupted)."""
import sys

from pipeline import data, layout
from pipeline.config import Params, load_params, resolve_experiment
from pipeline.errors import TrainingDiverged
from pipeline.tracking import run_identity
from pipeline.train import Trainer


def train(name: str, params: Params | None = None) -> dict:
    params = params or load_params()
    cfg = resolve_experiment(params, name)
    prepared = data.load_prepared(layout.prepared_dir(cfg.dataset))
    tags, logged_params = run_identity(params, name, cfg, prepared.meta)
    trainer = Trainer(name, cfg, prepared, layout.run_dir(name), metrics_cfg=params.metrics,
                      classifier_path=layout.classifier_path(cfg.dataset),
                      tracking_tags=tags, tracking_params=logged_params)
    try:
        return trainer.fit()
    except TrainingDiverged as exc:  # a result, not a crash: the rest of `dvc repro` goes on
        print(f"ganlab: {exc}\nganlab: {name} is recorded as a failed run (runs/{name}/train.json, MLflow "
              f"status FAILED); the other experiments and the report go on", file=sys.stderr)
        return trainer.publish_diverged(str(exc))


if __name__ == "__main__":
    from stages._cli import run

    run(train, "python -m stages.train EXPERIMENT")

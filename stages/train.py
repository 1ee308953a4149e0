"""DVC stage train@<experiment>: train one GAN, write runs/<experiment>/ (resumes if interrupted)."""
from pipeline import data, layout
from pipeline.config import Params, load_params, resolve_experiment
from pipeline.train import Trainer


def train(name: str, params: Params | None = None) -> dict:
    params = params or load_params()
    cfg = resolve_experiment(params, name)
    prepared = data.load_prepared(layout.prepared_dir(cfg.dataset))
    trainer = Trainer(
        name, cfg, prepared, layout.run_dir(name),
        metrics_cfg=params.metrics,
        classifier_path=layout.classifier_path(cfg.dataset),
        # `group`: the runs that differ only by seed (filter on tags.group in `mlflow ui` to compare them)
        tracking_tags={"dvc_stage": f"train@{name}", "profile": params.profile, "experiment": name,
                       "group": f"{cfg.variant_label()} on {cfg.dataset}", "seed": str(cfg.seed),
                       **{k: v for k, v in data.identity(cfg.dataset, prepared.meta).items() if v}},
        tracking_params={
            **cfg.model_dump(mode="json"), "profile": params.profile,
            "dataset_options": params.datasets[cfg.dataset].model_dump(mode="json"),
        },
    )
    return trainer.fit()


if __name__ == "__main__":
    from stages._cli import run

    run(train, "python -m stages.train EXPERIMENT")

"""Final metrics of one trained experiment, for the last and the best checkpoint.

* IS / FID / KID with every configured extractor (torch-fidelity), generated images vs the real
  training images; a conditional G is given labels drawn from the real label mix.
* FID / KID against the dataset's held-out images too (`fid_<x>_heldout`, `kid_<x>_heldout`):
  copying the training images scores well against those only. No held-out images: `heldout` says why.
* With the dataset classifier: class coverage of the generated images and, for conditional
  models, conditional accuracy on a class-balanced generated set.
* Optionally (`near_duplicates`) the share of generated images with a near-identical neighbour.
* For a semi-supervised K+1 D: its test accuracy as a classifier, next to the supervised-only
  baseline trained on the same labels.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from pipeline.data import prepare as data
from pipeline import nets
from pipeline.evaluate.classifier import class_report, load_dataset_classifier, reliability
from pipeline.core.config import ExperimentConfig, MetricsConfig
from pipeline.data.prepare import Prepared
from pipeline.core.env import pick_device
from pipeline.evaluate.metrics import compute_metrics, extract_features, near_duplicate_rate, plan_instruments, real_features
from pipeline.nets.sampling import balanced_labels, generate, labels_like, to_unit_range
from pipeline.train.checkpoint import Checkpoint, load_checkpoint
from pipeline.core.rundir import RunDir

FAKE_SEED_OFFSET = 3  # evaluation latents differ from training's and from the cheap FID's


def _capped(images: torch.Tensor, labels: torch.Tensor, n_real: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    if n_real is not None and n_real < len(images):
        pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:n_real].sort().values
        images, labels = images[pick], labels[pick]
    return images, labels


def real_reference(prepared: Prepared, n_real: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The real images (and labels) metrics compare against: the training split, a fixed subset if capped."""
    return _capped(prepared.images, prepared.labels, n_real)


def heldout_reference(prepared: Prepared, n_real: int | None) -> tuple[torch.Tensor | None, str]:
    """(held-out real images, capped at n_real like the training reference, and what they are), or
    (None, why there are none): metrics.json always says which, never a silent omission."""
    images, options = prepared.test_images, prepared.meta.get("options", {})
    if images is None or len(images) < 2:
        return None, (f"none: dataset has no holdout (split {options.get('split', '?')}, "
                      f"holdout {options.get('holdout', 0)})")
    images, _ = _capped(images, prepared.test_labels, n_real)
    origin = (f"holdout {options['holdout']} of the prepared images" if options.get("holdout")
              else "the source's test split")
    return images, f"{len(images):,} held-out images ({origin}), never trained on"


def evaluate_checkpoint(G, cfg: ExperimentConfig, real, real_labels, metrics_cfg: MetricsConfig, *,
                        num_classes: int, conditional: bool, classifier_path: Path | None,
                        classifier, device, heldout: torch.Tensor | None = None) -> tuple[dict, dict, dict]:
    """(scalar metrics, skipped extractors -> reason, per-class details) of one generator; with
    `heldout`, FID / KID against those images too (suffix `_heldout`)."""
    seed = cfg.seed + FAKE_SEED_OFFSET
    labels = labels_like(real_labels, cfg.n_fake, seed) if conditional else None
    fake = generate(G, cfg.n_fake, cfg, seed=seed, device=device, labels=labels)
    cache_dir = Path(metrics_cfg.cache_dir)
    effnet = plan_instruments(["effnet"])[0]["effnet"] if cfg.near_duplicates else None
    fake_features = {"effnet": extract_features(fake, effnet, batch_size=metrics_cfg.batch_size, device=device)} \
        if effnet else {}  # extracted once: near-duplicates and the effnet metrics share them
    values, skipped = compute_metrics(
        fake, real, extractors=cfg.extractors, cache_dir=cache_dir, inception_weights=metrics_cfg.inception_weights,
        classifier_weights=classifier_path, kid_subset_size=metrics_cfg.kid_subset_size,
        kid_subsets=metrics_cfg.kid_subsets,
        batch_size=metrics_cfg.batch_size, device=device, fake_features=fake_features, heldout=heldout,
    )
    details = {}
    if effnet is not None:
        real_fd = real_features(real, effnet, cache_dir=cache_dir, batch_size=metrics_cfg.batch_size, device=device)
        values["near_dup_rate"], values["near_dup_threshold"] = near_duplicate_rate(
            fake_features["effnet"][effnet.pooled].double(), real_fd[effnet.pooled].double())
    if classifier is not None and num_classes >= 2:
        if conditional:  # every class requested equally often
            requested = balanced_labels(cfg.n_fake, num_classes)
            fake = generate(G, cfg.n_fake, cfg, seed=seed + 1, device=device, labels=requested)
        else:
            requested = None
        report = class_report(classifier, fake, requested, num_classes)
        details = {"cond_acc_per_class": report.pop("cond_acc_per_class", None)}
        values.update(report)
    return values, skipped, details


def evaluate_run(cfg: ExperimentConfig, prepared: Prepared, paths: RunDir, metrics_cfg: MetricsConfig,
                 *, classifier_path: Path | None = None) -> tuple[dict, dict, dict]:
    """Returns (metrics, skipped extractors -> reason, per-class details). Unprefixed keys are the
    final checkpoint's, `best_`-prefixed ones the best checkpoint's (lowest cheap FID in training)."""
    summary = json.loads(paths.summary.read_text())
    device = pick_device(cfg.device)
    real, real_labels = real_reference(prepared, cfg.n_real)
    heldout, heldout_note = heldout_reference(prepared, cfg.n_real)
    family = nets.FAMILIES[cfg.model]
    classifier, state_or_reason = load_dataset_classifier(classifier_path, device)
    results = {"n_fake": cfg.n_fake, "n_real": len(real), "heldout": heldout_note,
               **({"n_heldout": len(heldout)} if heldout is not None else {}),
               "best_epoch": summary["best_epoch"], "epochs": summary["epochs"],
               **data.identity(cfg.dataset, prepared.meta)}
    skipped: dict[str, str] = {}
    if classifier is None:
        skipped["class_metrics"] = state_or_reason
    else:  # every metric measured with the classifier is only as good as its accuracy: record it beside them
        accuracy = state_or_reason["report"]["accuracy"]
        check = reliability(accuracy, prepared.meta.get("classifier_floor"), len(prepared.classes))
        results.update(classifier_accuracy=accuracy, classifier_floor=check["floor"], classifier_reliable=check["reliable"])
    details: dict[str, dict] = {}
    final = None
    last = load_checkpoint(paths.last)
    for prefix, path in (("", paths.last), ("best_", paths.best)):
        if prefix and summary["best_epoch"] == summary["epochs"]:
            values, detail = final  # the best checkpoint is the final one
        else:
            G = (last if path == paths.last else load_checkpoint(path)).generator(device)
            values, missing, detail = evaluate_checkpoint(
                G, cfg, real, real_labels, metrics_cfg, num_classes=len(prepared.classes),
                conditional=family.conditional, classifier_path=classifier_path, classifier=classifier,
                device=device, heldout=heldout,
            )
            skipped.update(missing)
            final = final or (values, detail)
        results.update({prefix + k: v for k, v in values.items()})
        details[prefix + "checkpoint"] = detail
    results.update(semi_supervised_accuracy(last, prepared, device))
    return results, skipped, details


def semi_supervised_accuracy(checkpoint: Checkpoint, prepared: Prepared, device) -> dict:
    """Test accuracy of a K+1 D and of its supervised-only baseline; {} for other models."""
    state = checkpoint.state
    if "D_supervised" not in state:
        return {}
    if prepared.test_images is None:
        raise ValueError("a semi-supervised run needs held-out real images: dataset split train, or holdout > 0")
    out = {"ssl_labelled_images": state["labelled_images"]}
    for key, name in (("D", "ssl_acc"), ("D_supervised", "ssl_baseline_acc")):
        D = checkpoint.discriminator(key, device)
        with torch.no_grad():
            pred = torch.cat([D(to_unit_range(x.to(device))).class_logits.argmax(1).cpu()
                              for x in prepared.test_images.split(512)])
        out[name] = float((pred == prepared.test_labels).float().mean())
    out["ssl_gain"] = out["ssl_acc"] - out["ssl_baseline_acc"]
    return out

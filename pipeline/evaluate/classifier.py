"""The dataset classifier: a small CNN trained on a dataset's real training images.

It judges generated images where Inception cannot (28 px glyphs): conditional accuracy (does
a conditional G draw the class it was asked for?), class coverage (how many classes the
samples spread over) and, registered with torch-fidelity as the `classifier` extractor,
FID / KID in its own feature space.

Network: [conv3x3 -> BN -> ReLU] x2, maxpool, [conv x2] at twice the width, maxpool, one conv at
four times the width, global average pool (the features), dropout, linear (the logits).
Trained with AdamW + one-cycle schedule and random shifts of up to 2 px, in channels_last
memory format (about 1.8x faster than contiguous on this project's 2-core CPU, same numbers up
to rounding).

Its test accuracy is compared with the dataset's `classifier_floor` (e.g. 0.97 for MNIST): below
it, every metric measured with this classifier is reported as unreliable.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.core import progress
from pipeline.core.errors import ExtractorUnavailable
from pipeline.core.layout import save_torch_atomic
from pipeline.nets.sampling import to_unit_range

HOLDOUT_FRACTION = 0.1  # when the prepared set has no test part: this share of train is held out


def _block(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]


class ClassifierNet(nn.Module):
    def __init__(self, channels: int, num_classes: int, width: int = 32):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            *_block(channels, w), *_block(w, w), nn.MaxPool2d(2),
            *_block(w, 2 * w), *_block(2 * w, 2 * w), nn.MaxPool2d(2),
            *_block(2 * w, 4 * w), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(4 * w, num_classes))
        self.feature_dim = 4 * w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def random_shift(x: torch.Tensor, max_px: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by up to max_px pixels (edge pixels repeated), vectorised."""
    n, _, h, w = x.shape
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * max_px * 2 / torch.tensor([w, h])
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


@torch.no_grad()
def predict(model: ClassifierNet, images: torch.Tensor, batch_size: int = 512, features: bool = False) -> torch.Tensor:
    """Logits (or pooled features) for uint8 N x C x H x W images, in eval mode."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    for part in images.split(batch_size):
        x = to_unit_range(part.to(device)).contiguous(memory_format=torch.channels_last)
        out.append((model.features(x) if features else model(x)).float().cpu())
    model.train(was_training)
    return torch.cat(out)


def accuracy_report(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict:
    pred = logits.argmax(1)
    per_class = [float((pred[labels == k] == k).float().mean()) if (labels == k).any() else math.nan
                 for k in range(num_classes)]
    return {"accuracy": float((pred == labels).float().mean()),
            "balanced_accuracy": float(np.nanmean(per_class)), "per_class_accuracy": per_class}


def split_for_classifier(prepared, max_train_images: int | None, seed: int):
    """(train images, train labels, test images, test labels, where the test part came from)."""
    labelled = prepared.labels >= 0  # STL-10's unlabeled images carry -1
    images, labels = prepared.images[labelled], prepared.labels[labelled]
    if prepared.test_images is not None:
        test_images, test_labels, origin = prepared.test_images, prepared.test_labels, "prepared test split"
    else:
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed + 17))
        n_test = max(1, round(len(images) * HOLDOUT_FRACTION))
        test_images, test_labels = images[order[:n_test]], labels[order[:n_test]]
        images, labels = images[order[n_test:]], labels[order[n_test:]]
        origin = f"{HOLDOUT_FRACTION:.0%} of the training images held out"
    if max_train_images is not None and max_train_images < len(images):
        keep = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:max_train_images]
        images, labels = images[keep], labels[keep]
    return images, labels, test_images, test_labels, origin


def train_classifier(prepared, cfg, device: torch.device | str = "cpu") -> tuple[ClassifierNet, dict]:
    """Train on the real training images, report accuracy on the held-out real images, and
    whether it reaches the dataset's floor (`reliable`)."""
    device = torch.device(device)
    num_classes = len(prepared.classes)
    if num_classes < 2:
        raise ValueError("a classifier needs at least 2 classes")
    images, labels, test_images, test_labels, origin = split_for_classifier(prepared, cfg.max_train_images, cfg.seed)
    torch.manual_seed(cfg.seed)
    model = ClassifierNet(images.shape[1], num_classes, cfg.width).to(device, memory_format=torch.channels_last)
    steps_per_epoch = max(1, len(images) // cfg.batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(cfg.seed)
    images_dev, labels_dev = images.to(device), labels.to(device)
    started = time.perf_counter()
    for epoch in range(cfg.epochs):
        order = torch.randperm(len(images), generator=gen).to(device)
        bar = progress.bar(range(steps_per_epoch), desc=f"classifier {epoch + 1}/{cfg.epochs}", unit="it")
        for i in bar:
            idx = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            x = random_shift(to_unit_range(images_dev[idx]), 2, gen).contiguous(memory_format=torch.channels_last)
            loss = F.cross_entropy(model(x), labels_dev[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
            if i % 20 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        progress.line(f"classifier epoch {epoch + 1}/{cfg.epochs}: loss {loss.item():.4g} "
                      f"({time.perf_counter() - started:.0f} s; "
                      f"{progress.eta(epoch + 1, cfg.epochs, time.perf_counter() - started) or 'done'})")
    report = accuracy_report(predict(model, test_images), test_labels, num_classes)
    report.update(num_train_images=len(images), num_test_images=len(test_images), test_origin=origin,
                  epochs=cfg.epochs, train_time_s=time.perf_counter() - started)
    report.update(reliability(report["accuracy"], prepared.meta.get("classifier_floor"), num_classes))
    return model.eval(), report


def reliability(accuracy: float, floor: float | None, num_classes: int) -> dict:
    """{floor, reliable}: reliable unless the accuracy is below the floor. A dataset without a
    floor of its own (an image folder) gets halfway from chance to perfect, (1 + 1/K) / 2: a
    classifier short of that (too few images or steps) measures mostly noise, and says so."""
    if floor is None:
        floor = round((1 + 1 / num_classes) / 2, 4)
    return {"floor": floor, "reliable": accuracy >= floor}


def save_classifier(model: ClassifierNet, path: Path, *, classes: list[str], resolution: int, report: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_torch_atomic({"state": model.state_dict(), "channels": model.features[0].in_channels, "classes": classes,
                       "width": model.feature_dim // 4, "resolution": resolution, "report": report}, path)


def load_classifier(path: Path, device: torch.device | str = "cpu") -> tuple[ClassifierNet, dict]:
    state = torch.load(path, map_location="cpu", weights_only=False)
    if "skipped" in state:
        raise ExtractorUnavailable(f"{path}: {state['skipped']}")
    model = ClassifierNet(state["channels"], len(state["classes"]), state["width"])
    model.load_state_dict(state["state"])
    return model.to(device).eval().requires_grad_(False), state


def load_dataset_classifier(path: Path | None, device) -> tuple[ClassifierNet | None, dict | str]:
    """(model, checkpoint) or (None, reason) when there is none for this dataset (no file, or an
    unlabelled dataset's placeholder)."""
    if path is None or not Path(path).is_file():
        return None, f"no dataset classifier at {path}"
    try:
        return load_classifier(path, device)
    except ExtractorUnavailable as exc:
        return None, str(exc)


CONFIDENT = 0.9  # mean max-probability above which the classifier is sure of a class's images


def class_report(model: ClassifierNet, images: torch.Tensor, requested: torch.Tensor | None, num_classes: int) -> dict:
    """Conditional accuracy (share classified as the requested label, per class and mean) and class
    coverage of a set of images (generated or real).

    Coverage: entropy (nats) of the histogram of predicted labels, the same normalised by log N,
    and the number of classes receiving at least 1/(2N) of the images. Legibility: `confidence`,
    the classifier's mean max-probability, and `confident_classes`, the covered classes whose
    images it labels with a mean max-probability of at least CONFIDENT (does G draw clear digits
    of most classes, or blends the classifier hesitates over?).
    """
    probs = predict(model, images).softmax(1)
    top, pred = probs.max(1)
    counts = torch.bincount(pred, minlength=num_classes)
    share = counts.double() / len(pred)
    nonzero = share[share > 0]
    entropy = float(-(nonzero * nonzero.log()).sum()) + 0.0  # + 0.0: a single class gives 0, not -0
    covered = share >= 1 / (2 * num_classes)
    top_per_class = torch.zeros(num_classes).index_add_(0, pred, top) / counts.clamp(min=1)
    out = {
        "class_entropy": entropy,
        "class_entropy_norm": entropy / math.log(num_classes),
        "classes_covered": int(covered.sum()),
        "confidence": float(top.mean()),
        "confident_classes": int((covered & (top_per_class >= CONFIDENT)).sum()),
    }
    if requested is not None:
        per_class = [float((pred[requested == k] == k).float().mean()) if (requested == k).any() else math.nan
                     for k in range(num_classes)]
        out.update(cond_acc=float(np.nanmean(per_class)), cond_acc_per_class=per_class)
    return out

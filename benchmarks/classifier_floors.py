"""Do the default profile's dataset classifiers reach their accuracy floors?

Run by hand (a few minutes on 2 CPU cores); the default `dvc repro` measures the same thing in
its classifier@ stages, this script does only that part:

    python benchmarks/classifier_floors.py [--params params.yaml]

For every labelled dataset of the params file it prepares the data and trains the classifier
exactly as the `prepare@` and `classifier@` stages do (same functions, same settings), in a
temporary directory, and compares the held-out test accuracy with the dataset's floor
(`classifier_floor`, or its source's: MNIST 0.97, Kuzushiji-MNIST 0.93, Fashion-MNIST 0.88).
Writes benchmarks/classifier_floors.json; exits 1 if a classifier is below its floor.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.core.config import load_params, resolve_classifier  # noqa: E402
from pipeline.data.prepare import dataset_num_classes  # noqa: E402
from stages.classifier import classifier  # noqa: E402
from stages.prepare import prepare  # noqa: E402

RESULTS = REPO / "benchmarks" / "classifier_floors.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    args = parser.parse_args()
    params = load_params(args.params.resolve())
    os.environ.setdefault("GANLAB_OFFLINE", "1")
    rows = {}
    with tempfile.TemporaryDirectory(prefix="ganlab-floors-") as tmp:
        os.chdir(tmp)
        (Path(tmp) / "data").mkdir()
        (Path(tmp) / "data" / "embedded").symlink_to(REPO / "data" / "embedded")  # image folders named relative
        for name, dataset in params.datasets.items():
            if (dataset_num_classes(dataset) or 1) < 2:
                continue
            started = time.perf_counter()
            prepare(name, params)
            report = classifier(name, params)
            cfg = resolve_classifier(params, name)
            rows[name] = {"accuracy": round(report["accuracy"], 4), "floor": report["floor"],
                          "reliable": report["reliable"], "epochs": cfg.epochs, "width": cfg.width,
                          "train_images": report["num_train_images"], "test_images": report["num_test_images"],
                          "seconds": round(time.perf_counter() - started, 1)}
            print(f"{name}: {rows[name]}", flush=True)
    result = {"params": str(args.params), "profile": params.profile, "date": time.strftime("%Y-%m-%d"),
              "classifiers": rows}
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    below = [name for name, row in rows.items() if not row["reliable"]]
    if below:
        sys.exit(f"below their floor: {', '.join(below)}")


if __name__ == "__main__":
    main()

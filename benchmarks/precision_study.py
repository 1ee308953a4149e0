"""Does bf16 autocast train GANs as well as fp32? The evidence behind `precision: auto`.

The same short training in fp32 and in bf16, several seeds each: the default study's DCGAN on
Fashion-MNIST at 32 px (params.yaml's `dcgan_fmnist32_non_saturating_s0` with its networks and
data), `--epochs` epochs, then the final FID in the Fashion-MNIST classifier's features from the
evaluate stage. Welch's t-test on the final FIDs (unequal variances), the difference of means
with a 95% Welch interval, and the training time of each run. Writes the `precision_study` entry of
benchmarks/results.json.

    python benchmarks/precision_study.py                 # 3 seeds, 5 epochs: ~15 min on 2 cores without native bf16
    python benchmarks/precision_study.py --seeds 5 --epochs 8

Runs in a temporary workspace (its own prepared data, classifier and MLflow store), offline.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from scipy import stats

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.default_run import cpu_model  # noqa: E402
from pipeline.core.env import pick_precision  # noqa: E402

BASE = "dcgan_fmnist32_non_saturating_s0"
RESULTS = REPO / "benchmarks" / "results.json"


def study_params(seeds: int, epochs: int) -> dict:
    """params.yaml with only the fp32 / bf16 copies of BASE (and the dataset they use)."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    base = {k: v for k, v in params["experiments"][BASE].items() if k != "<<"}
    params["experiments"] = {
        f"{precision}_s{seed}": {**base, "study": "precision", "variant": precision, "precision": precision,
                                 "seed": seed, "epochs": epochs}
        for precision in ("fp32", "bf16") for seed in range(seeds)
    }
    params["datasets"] = {base["dataset"]: params["datasets"][base["dataset"]]}
    params.pop("studies", None)
    return params


def welch(a: list[float], b: list[float]) -> dict:
    """Welch's t-test of mean(a) vs mean(b) and the 95% interval of mean(a) - mean(b)."""
    test = stats.ttest_ind(a, b, equal_var=False)
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = stats.t.ppf(0.975, dof) * (va + vb) ** 0.5
    diff = statistics.mean(a) - statistics.mean(b)
    return {"t": float(test.statistic), "p": float(test.pvalue), "dof": dof,
            "diff_mean": diff, "diff_ci95": [diff - half, diff + half]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("GANLAB_OFFLINE", "1")
    params = study_params(args.seeds, args.epochs)
    dataset = next(iter(params["datasets"]))
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        Path("params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        from stages.classifier import classifier
        from stages.evaluate import evaluate
        from stages.prepare import prepare
        from stages.train import train

        prepare(dataset)
        classifier(dataset)
        for name in params["experiments"]:  # seeds interleaved across precisions: drift hits both alike
            started = time.perf_counter()
            summary = train(name)
            metrics = evaluate(name)
            runs[name] = {"fid_classifier": metrics["fid_classifier"], "train_time_s": summary["train_time_s"],
                          "precision": summary["precision"], "wall_s": time.perf_counter() - started}
            print(f"{name}: FID {runs[name]['fid_classifier']:.2f}, train {summary['train_time_s']:.1f} s", flush=True)
    fid = {p: [r["fid_classifier"] for n, r in runs.items() if r["precision"] == p] for p in ("fp32", "bf16")}
    time_s = {p: statistics.mean(r["train_time_s"] for r in runs.values() if r["precision"] == p) for p in fid}
    result = {
        "what": f"{BASE} with {args.epochs} epochs, {args.seeds} seeds per precision; final FID in the "
                "Fashion-MNIST classifier's features (lower is better)",
        "date": time.strftime("%Y-%m-%d"), "cpu": cpu_model(), "threads": torch.get_num_threads(),
        "bf16_native": pick_precision("auto", torch.device("cpu")) == "bf16",
        "fid_mean": {p: statistics.mean(v) for p, v in fid.items()},
        "fid_sd": {p: statistics.stdev(v) for p, v in fid.items()},
        "welch_bf16_minus_fp32": welch(fid["bf16"], fid["fp32"]),
        "train_time_mean_s": time_s, "runs": runs,
    }
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results["precision_study"] = result
    RESULTS.write_text(json.dumps(results, indent=2))
    w = result["welch_bf16_minus_fp32"]
    print(f"FID fp32 {result['fid_mean']['fp32']:.2f} +- {result['fid_sd']['fp32']:.2f}, bf16 "
          f"{result['fid_mean']['bf16']:.2f} +- {result['fid_sd']['bf16']:.2f}; bf16 - fp32 = {w['diff_mean']:.2f} "
          f"[{w['diff_ci95'][0]:.2f}, {w['diff_ci95'][1]:.2f}], Welch p = {w['p']:.3f}; written to {RESULTS}")


if __name__ == "__main__":
    main()

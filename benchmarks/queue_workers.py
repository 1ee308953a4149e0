"""Do two `dvc queue` workers finish two experiments sooner than one worker running them in turn?

Issue 14 (F11): with `dvc queue start -j 2` each worker's torch took every core, so two workers
contended for them. Stages in a queue worker's copy now take cores // workers torch threads
(pipeline.core.cores.share_cores). This script times the same two queued experiments three ways in a
fresh clone of the repository (its committed state, offline, embedded data):

* `-j 1`: one worker, the experiments one after another, each stage with every core;
* `-j 2`: two workers, each stage with its share of the cores (the fix);
* `-j 2` with OMP_NUM_THREADS = every core: two workers that each take every core (as before).

Each queued experiment is the whole pipeline for one seed of a small DCGAN on Fashion-MNIST at
32 px (prepare and the classifier come from DVC's run cache after a first `dvc repro`). Writes
the `queue_workers` entry of benchmarks/results.json. Run it on an idle machine:

    python benchmarks/queue_workers.py              # ~10 min on 2 cores
    python benchmarks/queue_workers.py --epochs 2   # quicker, noisier
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.default_run import cpu_model  # noqa: E402

RESULTS = REPO / "benchmarks" / "results.json"


def bench_params(epochs: int) -> dict:
    """One small DCGAN experiment on 2,048 Fashion-MNIST images at 32 px, classifier metrics only."""
    return {
        "profile": "bench",
        "profiles": {"bench": {"eval_samples": 256, "n_fake": 1000, "n_real": 1000}},
        "datasets": {"fmnist32": {"source": "fashion_mnist", "split": "test", "holdout": 0.2, "resolution": 32,
                                  "max_images": 2560}},
        "defaults": {"seed": 0, "batch_size": 64, "lr_g": 2e-4, "lr_d": 2e-4, "z_dim": 64, "device": "cpu",
                     "precision": "fp32", "extractors": ["classifier"], "cheap_extractor": "classifier"},
        "metrics": {"extractors": ["classifier"], "cheap_extractor": "classifier",
                    "classifier": {"epochs": 2, "batch_size": 128, "lr": 0.005, "width": 16}},
        "studies": {"bench": {"question": "How long do two queued experiments take?"}},
        "experiments": {"bench": {"study": "bench", "model": "dcgan", "dataset": "fmnist32",
                                  "loss": "non_saturating", "epochs": epochs, "model_args": {"ngf": 32, "ndf": 32}}},
    }


def sh(cmd: list[str], cwd: Path, env: dict | None = None) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"`{' '.join(cmd)}` failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return done.stdout


def queue_and_time(work: Path, workers: int, seeds: tuple[int, int], env: dict) -> float:
    """Queue one experiment per seed, start `workers` workers, wait until the queue is empty."""
    for seed in seeds:
        sh(["dvc", "exp", "run", "--queue", "-S", f"defaults.seed={seed}"], work, env)
    start = time.perf_counter()
    # not piped: the workers inherit the output, and a pipe would stay open until they exit
    subprocess.run(["dvc", "queue", "start", "-j", str(workers)], cwd=work, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:
        time.sleep(2)
        status = sh(["dvc", "queue", "status"], work, env)
        if not any(word in status for word in ("Queued", "Running")):
            break
    elapsed = time.perf_counter() - start
    if "Failed" in status:
        raise SystemExit(f"a queued experiment failed:\n{status}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    base_env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MLFLOW_TRACKING_URI")}
    base_env["GANLAB_OFFLINE"] = "1"
    # this interpreter's dvc and python, also for the queue workers DVC spawns by name
    base_env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{base_env.get('PATH', '')}"
    figures = {}
    with tempfile.TemporaryDirectory(prefix="ganlab-queue-") as tmp:
        work = Path(tmp) / "repo"
        sh(["git", "clone", "-q", str(REPO), str(work)], Path(tmp), base_env)
        (work / "params.yaml").write_text(yaml.safe_dump(bench_params(args.epochs), sort_keys=False))
        sh(["dvc", "repro", "classifier@fmnist32"], work, base_env)  # shared by every run below
        sh(["git", "add", "-A"], work, base_env)
        sh(["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-qm", "bench"], work,
           base_env)
        cases = [("one worker (-j 1)", 1, {}), ("two workers, cores shared (-j 2)", 2, {}),
                 ("two workers, each every core (-j 2, OMP_NUM_THREADS=cores)", 2, {"OMP_NUM_THREADS": str(cores)})]
        for i, (label, workers, extra) in enumerate(cases):
            seeds = (10 * i + 1, 10 * i + 2)  # new seeds each time: nothing comes from the run cache
            figures[label] = round(queue_and_time(work, workers, seeds, {**base_env, **extra}), 1)
            print(f"{label}: {figures[label]} s for 2 experiments", flush=True)
    entry = {"date": time.strftime("%Y-%m-%d"), "cpu": cpu_model(), "cores": cores, "epochs": args.epochs,
             "what": "wall time for two queued experiments (whole pipeline, one seed each)", "seconds": figures}
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results["queue_workers"] = entry
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()

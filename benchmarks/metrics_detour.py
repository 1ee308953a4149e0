"""Final IS + FID + KID in memory (ganlab) vs the detour most users take: PNG files and the torch-fidelity CLI.

Same images, same extractor (EfficientNet-lite0, `effnet`), same IS splits, KID subsets and seed,
same machine, one after the other:

* in memory: `pipeline.evaluate.metrics.compute_metrics` on the N generated images as a uint8 tensor,
  against the real set's features cached on disk (as the evaluate stage finds them after its
  first run; the cache is filled before timing);
* detour: write the N images as PNG files, then run torch-fidelity's command line on that folder
  and a folder of the real images (`fidelity --input1 fake/ --input2 real/ --isc --fid --kid`), in
  a fresh process that imports pipeline.evaluate.metrics first so that `--feature-extractor effnet` exists
  there (what a user of any custom extractor has to do). torch-fidelity caches the features of
  registered datasets only, so a folder of real images is extracted on every call; the detour
  with `--input2-cache-name` (the real features cached by the CLI, filled before timing) is timed
  too.

Generated images: N samples of an untrained DCGAN generator at 32 px (seeded; what they show does
not change the time). Real images: the Fashion-MNIST test set (10,000, embedded). Numbers must
agree to 1e-3 relative. Writes the `metrics_detour` entry of benchmarks/results.json.

    python benchmarks/metrics_detour.py            # N = 10,000: ~15 min on 2 cores
    python benchmarks/metrics_detour.py --n 2000 --n-real 2000   # a quicker look
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

import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.default_run import cpu_model  # noqa: E402
from pipeline import metrics  # noqa: E402
from pipeline.datasets import official  # noqa: E402
from pipeline.nets import dcgan  # noqa: E402

RESULTS = REPO / "benchmarks" / "results.json"
KID_SUBSETS, ISC_SPLITS = 100, 10
CLI = "import sys, pipeline.evaluate.metrics; from torch_fidelity.fidelity import main; sys.argv[0] = 'fidelity'; main()"


def generated_images(n: int) -> torch.Tensor:
    torch.manual_seed(0)
    G, _ = dcgan.build(dcgan.Options(ngf=16, ndf=16), z_dim=100, channels=1, resolution=32)
    with torch.no_grad():
        x = torch.cat([G.eval()(torch.randn(256, 100)) for _ in range((n + 255) // 256)])[:n]
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def write_pngs(images: torch.Tensor, folder: Path) -> None:
    folder.mkdir(parents=True)
    for i, img in enumerate(images):
        Image.fromarray(img[0].numpy()).save(folder / f"{i:05d}.png")


def cli(fake_dir: Path, real_dir: Path, cache_root: Path, real_cache_name: str | None, kid_subset_size: int) -> dict:
    args = [sys.executable, "-c", CLI, "--input1", str(fake_dir), "--input2", str(real_dir), "--isc", "--fid",
            "--kid", "--feature-extractor", "effnet", "--feature-layer-isc", "logits_unbiased",
            "--feature-layer-fid", "1280", "--feature-layer-kid", "1280", "--isc-splits", str(ISC_SPLITS),
            "--kid-subsets", str(KID_SUBSETS), "--kid-subset-size", str(kid_subset_size),
            "--rng-seed", str(metrics.RNG_SEED), "--cpu", "--json", "--silent", "--cache-root", str(cache_root)]
    if real_cache_name:
        args += ["--input2-cache-name", real_cache_name]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    if result.returncode:
        sys.exit(f"torch-fidelity CLI failed:\n{result.stderr[-3000:]}")
    out = result.stdout
    values = json.loads(out[out.index("{"):])
    return {"is": values["inception_score_mean"], "fid": values["frechet_inception_distance"],
            "kid": values["kernel_inception_distance_mean"]}


def relative_gap(a: dict, b: dict) -> float:
    return max(abs(a[k] - b[k]) / max(abs(b[k]), 1e-12) for k in ("is", "fid", "kid"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="generated images")
    parser.add_argument("--n-real", type=int, default=10_000, help="real images (the first of the test set)")
    args = parser.parse_args()
    os.environ.setdefault("GANLAB_OFFLINE", "1")
    fake = generated_images(args.n)
    real = official.ARRAY_SOURCES["fashion_mnist"].load("test")[0]
    real = torch.as_tensor(real[: args.n_real]).reshape(-1, 1, 28, 28)
    subset = min(1000, len(fake), len(real))  # torch-fidelity's default KID subset size, at most the set sizes
    options = dict(extractors=["effnet"], kid_subsets=KID_SUBSETS, kid_subset_size=subset)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        metrics.compute_metrics(fake[:2], real, cache_dir=tmp / "cache", **options)  # fills the real cache
        metrics._REAL_MEMO.clear()  # from disk, as a fresh evaluate process finds it
        start = time.perf_counter()
        ours, _ = metrics.compute_metrics(fake, real, cache_dir=tmp / "cache", **options)
        ours_s = time.perf_counter() - start
        ours = {k.split("_")[0]: v for k, v in ours.items()}
        print(f"in memory: {ours_s:.1f} s {ours}", flush=True)

        write_pngs(real, tmp / "real")
        cli(tmp / "real", tmp / "real", tmp / "fidelity-cache", "ganlab-real", subset)  # fills the CLI's real cache
        start = time.perf_counter()
        write_pngs(fake, tmp / "fake")
        png_s = time.perf_counter() - start
        detour = cli(tmp / "fake", tmp / "real", tmp / "fidelity-cache", None, subset)
        detour_s = time.perf_counter() - start
        print(f"detour: {detour_s:.1f} s (PNG writing {png_s:.1f} s) {detour}", flush=True)
        start = time.perf_counter()
        cached = cli(tmp / "fake", tmp / "real", tmp / "fidelity-cache", "ganlab-real", subset)
        cached_s = time.perf_counter() - start + png_s
        print(f"detour, real features cached by the CLI: {cached_s:.1f} s {cached}", flush=True)
    result = {
        "what": f"IS + FID + KID (effnet) of {args.n} generated 32 px images vs the Fashion-MNIST test set "
                f"({len(real)} images); KID {KID_SUBSETS} subsets of {subset}, IS {ISC_SPLITS} splits",
        "date": time.strftime("%Y-%m-%d"), "cpu": cpu_model(), "threads": torch.get_num_threads(),
        "in_memory_s": ours_s, "detour_s": detour_s, "detour_png_writing_s": png_s,
        "detour_real_cached_s": cached_s, "speedup": detour_s / ours_s, "speedup_vs_cached_detour": cached_s / ours_s,
        "values": {"in_memory": ours, "detour": detour, "detour_real_cached": cached},
        "max_relative_gap": max(relative_gap(detour, ours), relative_gap(cached, ours)),
    }
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results["metrics_detour"] = result
    RESULTS.write_text(json.dumps(results, indent=2))
    print(f"in memory {ours_s:.1f} s, detour {detour_s:.1f} s ({result['speedup']:.2f}x), detour with cached "
          f"real features {cached_s:.1f} s ({result['speedup_vs_cached_detour']:.2f}x); largest relative gap "
          f"{result['max_relative_gap']:.1e}; written to {RESULTS}")


if __name__ == "__main__":
    main()

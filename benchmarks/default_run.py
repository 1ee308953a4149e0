"""Wall time of the default `dvc repro`, from cold, per stage and per stage kind.

Run by hand on an idle machine (the numbers are the machine's, not the code's alone):

    python benchmarks/default_run.py                 # fresh clone of HEAD in a temp dir, cold
    python benchmarks/default_run.py --workdir DIR   # an existing checkout (must be cold to count)
    python benchmarks/default_run.py --stage-server off   # every stage in a fresh interpreter, to compare

A fresh `git clone` of this repository is made (so nothing cached is reused: no DVC cache, no
MLflow store, no metric caches), `dvc repro` runs there with GANLAB_OFFLINE=1, and the time of
each stage is read off DVC's own "Running stage" lines (stage start to the next stage's start:
DVC's hashing and lock writing included). Writes benchmarks/default_run.json (default_run_fresh.json
with --stage-server off): total wall time,
time per stage kind (prepare, classifier, train, evaluate, aggregate), the five slowest stages,
each dataset classifier's test accuracy against its floor (the run fails if one is below:
the default profile must train classifiers good enough to judge generated images), and the
start-up of each stage kind (a fresh interpreter's `python -m stages.<kind> --help`, which exits
right after the imports) with the share of the total it adds up to.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from pipeline.core.phases import attribute  # noqa: E402

RESULTS = REPO / "benchmarks" / "default_run.json"
STAGE_LINE = re.compile(r"Running stage '([^']+)'")


def cpu_model() -> str:
    """The CPU's model name: a VM may move between hosts, and the figures move with it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def timed_repro(workdir: Path, env: dict) -> tuple[float, list[tuple[str, float]], int]:
    """(total seconds, [(stage, seconds)] in run order, exit code) of one `dvc repro`."""
    started = time.perf_counter()
    marks: list[tuple[str, float]] = []
    log = open(workdir / "default_run.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro"], cwd=workdir, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=1)
    for line in proc.stdout:
        log.write(line)
        match = STAGE_LINE.search(line)
        if match:
            marks.append((match.group(1), time.perf_counter()))
            print(f"{marks[-1][1] - started:7.1f}s  {match.group(1)}", flush=True)
    code = proc.wait()
    total = time.perf_counter() - started
    ends = [t for _, t in marks[1:]] + [started + total]
    return total, [(name, end - t) for (name, t), end in zip(marks, ends)], code


def cold_start_s(command: list[str], cwd: Path, env: dict, repeats: int = 3) -> float:
    """Median wall time of `command` (a fresh interpreter, or one forked by the stage server where
    `env` lets a stage command use it)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, cwd=cwd, env=env, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def where_it_goes(stages: list[tuple[str, float]], lines: list[dict], total: float) -> dict:
    """Training and evaluation (the training steps, the per-epoch metrics, the final metrics) against
    the rest: the train / evaluate stages' overhead by cause, the other stages, DVC between them."""
    wall = dict(stages)
    work = 0.0
    parts: dict[str, float] = defaultdict(float)
    for line in lines:
        kind = line["stage"].split("@")[0]
        if kind not in ("train", "evaluate"):
            parts[f"{kind} stages (whole processes)"] += line["process"]
        else:
            done, overhead = attribute(line)
            work += done
            for cause, seconds in overhead.items():
                parts[cause] += seconds
        parts["DVC (between stage processes)"] += wall.get(line["stage"], line["process"]) - line["process"]
    parts["DVC (between stage processes)"] += total - sum(wall.values())
    return {"training_and_evaluation_s": round(work, 1), "overhead_share": round(1 - work / total, 3),
            "overhead_s": {k: round(v, 1) for k, v in sorted(parts.items(), key=lambda kv: -kv[1])}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, help="run in this checkout instead of a fresh clone of HEAD")
    parser.add_argument("--stage-server", choices=("on", "off"), default="on",
                        help="off: every stage in a fresh interpreter (GANLAB_STAGE_SERVER=off), to compare")
    args = parser.parse_args()
    env = {**os.environ, "GANLAB_OFFLINE": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "GANLAB_STAGE_SERVER": args.stage_server}
    env.pop("MLFLOW_TRACKING_URI", None)
    with tempfile.TemporaryDirectory(prefix="ganlab-default-run-") as tmp:
        env["TMPDIR"] = str(Path(tmp) / "tmp")  # a stage server of its own, started cold by the first stage
        Path(env["TMPDIR"]).mkdir()
        workdir = args.workdir
        if workdir is None:
            workdir = Path(tmp) / "clone"
            subprocess.run(["git", "clone", "-q", str(REPO), str(workdir)], check=True)
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=workdir, capture_output=True, text=True).stdout.strip()
        env["GANLAB_PHASES"] = str(workdir / "phases.jsonl")  # every stage process's phases (pipeline/core/phases.py)
        total, stages, code = timed_repro(workdir, env)
        env.pop("GANLAB_PHASES")
        if code != 0:
            sys.exit(f"dvc repro failed (exit {code}): {(workdir / 'default_run.log').read_text()[-3000:]}")
        # start-up: a fresh interpreter importing the stage (`--help` exits right after the imports);
        # prepare imports torch only when it converts images, so torch's own import is measured too;
        # and the same command forked by the stage server
        kinds = ("sources", "prepare", "classifier", "train", "evaluate", "aggregate")
        startup = {kind: cold_start_s([sys.executable, "-m", f"stages.{kind}", "--help"], workdir,
                                      {**env, "GANLAB_STAGE_SERVER": "off"}) for kind in kinds}
        forked_startup = {kind: cold_start_s([sys.executable, "-m", f"stages.{kind}", "--help"], workdir,
                                             {**env, "GANLAB_STAGE_SERVER": "on"}) for kind in kinds}
        torch_import = cold_start_s([sys.executable, "-c", "import torch"], workdir, env)
        classifiers = {path.stem: {k: json.loads(path.read_text()).get(k) for k in ("accuracy", "floor", "reliable")}
                       for path in sorted((workdir / "models" / "classifier").glob("*.json"))
                       if "accuracy" in json.loads(path.read_text())}
        phase_lines = [json.loads(line) for line in (workdir / "phases.jsonl").read_text().splitlines()]
    by_kind: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for name, seconds in stages:
        kind = name.split("@")[0]
        by_kind[kind] += seconds
        counts[kind] += 1
    result = {
        "what": "cold `dvc repro` of the default params.yaml in a fresh clone, GANLAB_OFFLINE=1, "
                f"GANLAB_STAGE_SERVER={args.stage_server}",
        "commit": commit, "machine": f"{cpu_model()}, {os.cpu_count()} cores",
        "torch_threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d"),
        "total_s": round(total, 1), "stages": len(stages),
        "by_kind_s": {k: round(v, 1) for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])},
        "stages_per_kind": dict(counts),
        "slowest": [{"stage": n, "s": round(s, 1)} for n, s in sorted(stages, key=lambda x: -x[1])[:5]],
        "classifiers": classifiers,
        "startup_s": {k: round(v, 2) for k, v in startup.items()},
        "forked_startup_s": {k: round(v, 2) for k, v in forked_startup.items()},
        "torch_import_s": round(torch_import, 2),
        # what start-up adds up to in fresh interpreters (the stages' own, forked or not: where_it_goes)
        "startup_total_s": round(sum(counts[k] * startup[k] for k in counts)
                                 + counts.get("prepare", 0) * torch_import, 1),
        **where_it_goes(stages, phase_lines, total),
        "all_stages_s": {n: round(s, 1) for n, s in stages},
    }
    target = RESULTS if args.stage_server == "on" else RESULTS.with_name("default_run_fresh.json")
    target.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "all_stages_s"}, indent=2))
    below = [name for name, c in classifiers.items() if not c["reliable"]]
    if below:
        sys.exit(f"classifier(s) below their accuracy floor: {', '.join(below)}")


if __name__ == "__main__":
    main()

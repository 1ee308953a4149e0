"""The loss-budget sweep (studies/sweep.yaml) from cold, and where its stages' wall time goes.

Run by hand on an idle machine (the figures are the machine's, not the code's alone):

    python benchmarks/sweep_run.py                      # the whole sweep, 2 lanes (~80 min on 2 cores)
    python benchmarks/sweep_run.py --draws 1            # a quick look: 1 draw per loss
    python benchmarks/sweep_run.py --publish            # and copy its page to docs/results/sweep/

A fresh clone of HEAD (nothing cached), studies/sweep.yaml as its params.yaml, expanded; then
README's command for a sweep on one machine, `python tools/run_lanes.py 'evaluate@*'`, and
`dvc repro` for the report, with GANLAB_PHASES set so that every stage process records its phases
(pipeline/core/phases.py). A stage's wall time is the time from the previous stage's end in its
lane to its own end (DVC's bookkeeping and the interpreter's start-up included). Training and
evaluation are the training steps, the per-epoch metrics and grids (`Monitoring`) and the evaluate
stage's metrics; everything else is overhead, broken down by phase (the stages run in the workspace,
prepare and classifier before the lanes and the report after them, count their process time). Writes
benchmarks/sweep_run.json (or sweep_run_<N>draws.json with --draws) and every stage's phases beside it
(sweep_run_phases.jsonl).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.default_run import cpu_model  # noqa: E402
from pipeline.core.phases import attribute  # noqa: E402



def prepare_clone(workdir: Path, draws: int | None) -> None:
    subprocess.run(["git", "clone", "-q", str(REPO), str(workdir)], check=True)
    study = yaml.safe_load((workdir / "studies" / "sweep.yaml").read_text())
    text = (workdir / "studies" / "sweep.yaml").read_text()
    if draws is not None:
        for sweep in study["sweeps"]:
            text = text.replace(f"draws: {study['sweeps'][sweep]['draws']}", f"draws: {draws}")
    (workdir / "params.yaml").write_text(text)
    subprocess.run([sys.executable, "tools/expand_sweeps.py"], cwd=workdir, check=True)


def timed(command: list[str], workdir: Path, env: dict, log: Path) -> float:
    started = time.perf_counter()
    with open(log, "a") as out:
        code = subprocess.run(command, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    if code != 0:
        sys.exit(f"{' '.join(command)} failed (exit {code}); see {log}")
    return time.perf_counter() - started


def breakdown(lines: list[dict], lane_start: float) -> dict:
    """Summed stage wall time, what of it is training and evaluation, and where the rest goes. A
    lane's stage lasts from the previous stage's end in that lane to its own end; a stage run in
    the workspace (prepare, classifier, the report) counts its process time only."""
    walls: list[tuple[dict, float]] = []
    by_lane: dict[str, list[dict]] = defaultdict(list)
    for line in lines:
        if "/.dvc/tmp/lanes/" in line["cwd"]:
            by_lane[line["cwd"]].append(line)
        else:
            walls.append((line, line["process"]))
    for stages in by_lane.values():
        stages.sort(key=lambda s: s["end"])
        previous_end = max(lane_start, stages[0]["end"] - stages[0]["process"])
        for stage in stages:
            walls.append((stage, stage["end"] - previous_end))
            previous_end = stage["end"]
    parts: dict[str, float] = defaultdict(float)
    stage_wall = work = runs_wall = runs_work = 0.0
    for stage, wall in walls:
        kind = stage["stage"].split("@")[0]
        done, overhead = attribute(stage)
        stage_wall, work = stage_wall + wall, work + done
        if kind not in ("train", "evaluate"):
            parts[f"{kind} stages"] += wall
            continue
        runs_wall, runs_work = runs_wall + wall, runs_work + done
        for cause, seconds in overhead.items():
            parts[cause] += seconds
        parts["DVC (between stage processes)"] += wall - stage["process"]
    return {"runs": sum(s["stage"].startswith("train@") for s, _ in walls),
            "summed_stage_wall_s": round(stage_wall, 1), "training_and_evaluation_s": round(work, 1),
            "overhead_share": round(1 - work / stage_wall, 3) if stage_wall else None,
            "overhead_share_of_train_and_evaluate_stages": round(1 - runs_work / runs_wall, 3) if runs_wall else None,
            "overhead_s": {k: round(v, 1) for k, v in sorted(parts.items(), key=lambda kv: -kv[1])}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draws", type=int, help="draws per loss instead of the file's (a quicker look)")
    parser.add_argument("--lanes", type=int, default=2)
    parser.add_argument("--publish", action="store_true", help="copy the sweep's page and plots to docs/results/sweep/")
    args = parser.parse_args()
    env = {**os.environ, "GANLAB_OFFLINE": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("OMP_NUM_THREADS", None)
    with tempfile.TemporaryDirectory(prefix="ganlab-sweep-") as tmp:
        workdir = Path(tmp) / "clone"
        prepare_clone(workdir, args.draws)
        env["GANLAB_PHASES"] = str(workdir / "phases.jsonl")
        env["TMPDIR"] = str(Path(tmp) / "tmp")  # a stage server of its own (stages/_server.py), started cold
        Path(env["TMPDIR"]).mkdir()
        log = workdir / "sweep_run.log"
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=workdir, capture_output=True, text=True).stdout.strip()
        started = time.time()
        lanes_s = timed([sys.executable, "tools/run_lanes.py", "--lanes", str(args.lanes), "evaluate@*"],
                        workdir, env, log)
        report_s = timed([sys.executable, "-m", "dvc", "repro"], workdir, env, log)
        lines = [json.loads(line) for line in (workdir / "phases.jsonl").read_text().splitlines()]
        shared_s = sum(l["process"] for l in lines if l["stage"].startswith(("prepare@", "classifier@")))
        lane_start = min(l["end"] - l["process"] for l in lines if "/.dvc/tmp/lanes/" in l["cwd"])
        result = {
            "what": f"studies/sweep.yaml from cold in a fresh clone, `tools/run_lanes.py --lanes {args.lanes}` "
                    "then `dvc repro`, GANLAB_OFFLINE=1",
            "commit": commit, "machine": f"{cpu_model()}, {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d"),
            "draws_per_loss": args.draws or "as in the file",
            "wall_s": round(lanes_s + report_s, 1),
            "wall_parts_s": {"prepare and classifiers (run once, before the lanes)": round(shared_s, 1),
                             "lanes": round(max(l["end"] for l in lines) - lane_start, 1),
                             "after the lanes: their last batch landing, and the report": round(
                                 time.time() - max(l["end"] for l in lines if "/.dvc/tmp/lanes/" in l["cwd"]), 1)},
            **breakdown(lines, lane_start),
            # a stage a lane could not finish runs in the workspace afterwards: listed, not hidden
            "ran_outside_lanes": sorted(l["stage"] for l in lines if "/.dvc/tmp/lanes/" not in l["cwd"]
                                        and l["stage"].startswith(("train@", "evaluate@"))),
            "started": time.strftime("%H:%M:%S", time.localtime(started)),
        }
        name = "sweep_run" if args.draws is None else f"sweep_run_{args.draws}draws"
        shutil.copy(workdir / "phases.jsonl", REPO / "benchmarks" / f"{name}_phases.jsonl")  # the raw figures
        if args.publish:
            target = REPO / "docs" / "results" / "sweep"
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(workdir / "results", target, ignore=shutil.ignore_patterns("report.md", "curves.csv"))
    (REPO / "benchmarks" / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

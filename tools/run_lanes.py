"""Run stages in several lanes at once on this machine, then bring their outputs into this workspace.

    python tools/run_lanes.py 'evaluate@mlp_budget_*' 'evaluate@dcgan_budget_*'   # 2 lanes
    python tools/run_lanes.py --lanes 4 'evaluate@*'

`dvc repro` runs one stage at a time. A sweep is many short runs that each use one core well, so on
a small machine two at a time finish sooner. This does what docs/operations.md does with several
machines, on one: each lane is a copy of this workspace (a git worktree under .dvc/tmp/lanes/ with
its uncommitted changes, sharing this repository's DVC cache) running `dvc repro` of its share of
the stages; every stage a lane runs goes into DVC's run cache, and a `dvc repro` of the same stages
here then restores their outputs instead of running them (and runs whatever a lane could not).
Stages that several lanes need (prepare, classifier) run here first; stages already up to date are
not run again. Each stage takes its share of the cores (pipeline/core/cores.py); the MLflow runs go
to this workspace's store. Interrupted, run the same command again: what a lane finished is in the
run cache. (DVC's own queue, `dvc exp run --queue`, does the same but spent ~18 s of CPU on each
task's copy of this repository, as long as a short run's training.)
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

LANES_DIR = Path(".dvc/tmp/lanes")


def run(*command: str, cwd: Path | None = None, capture: bool = False) -> str:
    done = subprocess.run(command, cwd=cwd, text=True, check=False, stdout=subprocess.PIPE if capture else None)
    if done.returncode != 0:
        sys.exit(f"ganlab: `{' '.join(command[:4])} ...` failed (exit {done.returncode})")
    return done.stdout or ""


def dvc(*args: str, cwd: Path | None = None, capture: bool = False) -> str:
    return run(sys.executable, "-m", "dvc", *args, cwd=cwd, capture=capture)


def plan(patterns: list[str], lanes: int) -> tuple[list[str], list[list[str]]]:
    """(stages several lanes would need, in run order; each lane's targets): the matching stages that
    are not up to date, dealt out in turn so that every lane gets a mix of them."""
    import networkx as nx
    from dvc.repo import Repo

    graph = Repo(".").index.graph  # an edge points from a stage to a stage it depends on
    stages = {stage.addressing: stage for stage in graph.nodes}
    matching = [name for name in stages if any(fnmatch.fnmatchcase(name, p) for p in patterns)]
    if not matching:
        sys.exit(f"ganlab: no stage matches {' '.join(patterns)} (`dvc stage list --name-only` lists them)")
    changed = json.loads(dvc("status", "--json", *matching, capture=True) or "{}")
    todo = [name for name in matching if name in changed or any(
        up.addressing in changed for up in nx.descendants(graph, stages[name]))]
    shares = [todo[i::lanes] for i in range(lanes)]
    needs = [set().union(*(nx.descendants(graph, stages[t]) for t in share)) for share in shares if share]
    shared = {stage for stage in set().union(*needs) if sum(stage in n for n in needs) > 1} if needs else set()
    in_order = [s.addressing for s in reversed(list(nx.topological_sort(graph))) if s in shared]
    return in_order, [share for share in shares if share]


def make_lane(path: Path, cache_dir: str) -> None:
    """A git worktree of HEAD at `path` with this workspace's uncommitted changes, using its DVC cache."""
    if path.exists():
        run("git", "worktree", "remove", "--force", str(path))
    run("git", "worktree", "add", "--quiet", "--detach", str(path), "HEAD")
    status = run("git", "status", "--porcelain", "-z", "--untracked-files=all", capture=True)
    for entry in filter(None, status.split("\0")):
        code, name = entry[:2], entry[3:]
        if "D" in code:
            (path / name).unlink(missing_ok=True)
        elif Path(name).is_file():
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(name, path / name)
    dvc("config", "--local", "cache.dir", cache_dir, cwd=path)


def start_lane(lane: Path, targets: list[str]) -> subprocess.Popen:
    """`dvc repro` of `targets` in `lane`: its output to lane.log there, its "Running stage" lines here."""
    proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "--keep-going", *targets], cwd=lane,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)

    def follow():
        with open(lane / "lane.log", "w") as log:
            for line in proc.stdout:
                log.write(line)
                if line.startswith("Running stage"):
                    print(f"[{lane.name}] {line}", end="", flush=True)

    threading.Thread(target=follow, daemon=True).start()
    return proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("patterns", nargs="+", help="stage names or globs, e.g. 'evaluate@mlp_budget_*'")
    parser.add_argument("--lanes", "-j", type=int, default=2, help="stages running at once (default 2)")
    args = parser.parse_args()
    if args.lanes < 1:
        sys.exit("ganlab: --lanes must be at least 1")
    if not Path("dvc.yaml").exists():
        sys.exit("ganlab: run this in the repository's root (where dvc.yaml is)")
    shared, shares = plan(args.patterns, args.lanes)
    if shares:
        if shared:
            dvc("repro", "--single-item", *shared)  # once here, not once per lane
        cache_dir = dvc("cache", "dir", capture=True).strip()
        lanes = [LANES_DIR.resolve() / f"lane{i}" for i in range(len(shares))]
        for lane in lanes:
            make_lane(lane, cache_dir)
        print(f"ganlab: {sum(map(len, shares))} stage(s) in {len(shares)} lanes ({', '.join(map(str, lanes))}; "
              "logs: lane.log there)", flush=True)
        running = [start_lane(lane, share) for lane, share in zip(lanes, shares)]
        failed = [lane for lane, proc in zip(lanes, running) if proc.wait() != 0]
        if failed:
            print(f"ganlab: a stage failed in {', '.join(map(str, failed))} (lane.log there says which); "
                  "it runs here next", file=sys.stderr, flush=True)
        for lane in lanes:
            if lane not in failed:
                run("git", "worktree", "remove", "--force", str(lane))
    else:
        print("ganlab: every matching stage is up to date", flush=True)
    dvc("repro", "--glob", *args.patterns)  # restores what the lanes ran, from the run cache


if __name__ == "__main__":
    main()

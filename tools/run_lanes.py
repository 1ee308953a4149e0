"""Run stages in several lanes at once on this machine, each run's outputs landing in this workspace.

    python tools/run_lanes.py 'evaluate@mlp_budget_*' 'evaluate@dcgan_budget_*'   # 2 lanes
    python tools/run_lanes.py --lanes 4 'evaluate@*'

`dvc repro` runs one stage at a time. A sweep is many short runs that each use one core well, so on
a small machine two at a time finish sooner. This does what docs/operations.md does with several
machines, on one: each lane is a copy of this workspace (a git worktree under .dvc/tmp/lanes/ with
its uncommitted changes, sharing this repository's DVC cache). Stages that several targets need
(sources, prepare, classifier) run here first, with `dvc repro`; then each lane runs its targets'
own stages (train@X, evaluate@X) a few runs at a time, and after each batch its dvc.lock entries
are merged into this workspace's and their outputs checked out here from the cache. Every stage a
lane runs also goes into DVC's run cache, so an interrupted call, run again, restores what was
finished instead of running it. A run whose stage fails in a lane is run again here at the end by
`dvc repro`, where its error shows.

Why batches and not one `dvc repro` per lane: DVC re-reads and rewrites the whole dvc.lock around
every stage it runs, ~3 s per stage with a sweep's 330 entries; a lane's dvc.lock holds one batch.
Why not DVC's queue (`dvc exp run --queue`): it spent ~18 s of CPU on each task's copy of this
repository, as long as a short run's training. Each stage takes
its share of the cores (pipeline/core/cores.py); the MLflow runs go to this workspace's store.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.core.cores import usable_cores  # noqa: E402
from stages import _server  # noqa: E402

LANES_DIR = Path(".dvc/tmp/lanes")
BATCH = 6  # runs per `dvc repro` in a lane: its dvc.lock stays small, and a batch's outputs land here soon


def run(*command: str, cwd: Path | None = None, capture: bool = False) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd=cwd, text=True, stdout=subprocess.PIPE if capture else None)
    if done.returncode != 0:
        sys.exit(f"ganlab: `{' '.join(command[:5])} ...` failed (exit {done.returncode})")
    return done


def dvc(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return run(sys.executable, "-m", "dvc", *args, **kwargs)


def plan(patterns: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """(the stages that several targets need, in run order; each target's own stages, in run order).
    Targets are the matching stages that no other matching stage depends on."""
    import networkx as nx
    from dvc.repo import Repo

    graph = Repo(".").index.graph  # an edge points from a stage to a stage it depends on
    by_name = {stage.addressing: stage for stage in graph.nodes}
    matching = {by_name[n] for n in by_name if any(fnmatch.fnmatchcase(n, p) for p in patterns)}
    if not matching:
        sys.exit(f"ganlab: no stage matches {' '.join(patterns)} (`dvc stage list --name-only` lists them)")
    upstream = {stage: nx.descendants(graph, stage) for stage in matching}
    targets = [s for s in matching if not any(s in upstream[other] for other in matching)]
    needed_by = Counter(up for t in targets for up in upstream[t])
    order = list(reversed(list(nx.topological_sort(graph))))
    common = [s.addressing for s in order if needed_by[s] > 1]
    own = {t.addressing: [s.addressing for s in order if s is t or (s in upstream[t] and needed_by[s] == 1)]
           for t in sorted(targets, key=lambda s: s.addressing)}
    return common, own


def lock_entries(path: Path) -> dict[str, dict]:
    from dvc.utils.serialize import load_yaml
    return load_yaml(path).get("stages", {}) if path.exists() else {}


def write_lock(path: Path, entries: dict[str, dict]) -> None:
    """dvc.lock with `entries`, replaced at once (a reader never sees half a file)."""
    from dvc.utils.serialize import dump_yaml
    tmp = path.with_name(path.name + ".tmp")
    dump_yaml(tmp, {"schema": "2.0", "stages": entries})
    os.replace(tmp, path)


class Lane:
    """A git worktree of HEAD with this workspace's uncommitted changes and DVC cache, holding the
    outputs of the stages several targets need; runs batches of runs' own stages."""

    def __init__(self, path: Path, cache_dir: str, common: list[str], threads: int):
        self.path = path
        self.env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        if path.exists():
            run("git", "worktree", "remove", "--force", str(path))
        run("git", "worktree", "add", "--quiet", "--detach", str(path), "HEAD")
        status = run("git", "status", "--porcelain", "-z", "--untracked-files=all", capture=True).stdout
        for entry in filter(None, status.split("\0")):
            code, name = entry[:2], entry[3:]
            if "D" in code:
                (path / name).unlink(missing_ok=True)
            elif Path(name).is_file():
                (path / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(name, path / name)
        dvc("config", "--local", "cache.dir", cache_dir, cwd=path)
        here = lock_entries(Path("dvc.lock"))
        self.inputs = {name: here[name] for name in common if name in here}
        write_lock(path / "dvc.lock", self.inputs)
        dvc("checkout", "--quiet", *self.inputs, cwd=path)
        self.log = open(path / "lane.log", "w")

    def run_batch(self, stages: list[str]) -> dict[str, dict]:
        """Run `stages` here (those not up to date); the dvc.lock entries of those that succeeded."""
        proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "--single-item", "--keep-going", *stages],
                                cwd=self.path, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, bufsize=1)
        for line in proc.stdout:
            self.log.write(line)
            if line.startswith("Running stage"):
                print(f"[{self.path.name}] {line}", end="", flush=True)
        proc.wait()
        done = lock_entries(self.path / "dvc.lock")
        write_lock(self.path / "dvc.lock", self.inputs)
        return {name: done[name] for name in stages if name in done}

    def remove(self) -> None:
        self.log.close()
        run("git", "worktree", "remove", "--force", str(self.path))


class Workspace:
    """This workspace's side: one thread merges the lanes' dvc.lock entries and checks their outputs
    out, batch by batch, while the lanes go on with their next batches."""

    def __init__(self):
        self.landed: set[str] = set()
        self.batches: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._land_each)
        self.thread.start()

    def land(self, entries: dict[str, dict]) -> None:
        if entries:
            self.batches.put(entries)

    def close(self) -> None:
        self.batches.put(None)
        self.thread.join()

    def _land_each(self) -> None:
        while (entries := self.batches.get()) is not None:
            while not self.batches.empty():  # what came meanwhile lands with it
                more = self.batches.get()
                if more is None:
                    self.batches.put(None)
                    break
                entries = {**entries, **more}
            write_lock(Path("dvc.lock"), {**lock_entries(Path("dvc.lock")), **entries})
            try:
                dvc("checkout", "--quiet", *entries)
            except SystemExit as exc:  # these runs are then run again here at the end
                print(exc, file=sys.stderr, flush=True)
                continue
            self.landed.update(entries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("patterns", nargs="+", help="stage names or globs, e.g. 'evaluate@mlp_budget_*'")
    parser.add_argument("--lanes", "-j", type=int, default=2, help="stages running at once (default 2)")
    args = parser.parse_args()
    if args.lanes < 1:
        sys.exit("ganlab: --lanes must be at least 1")
    if not Path("dvc.yaml").exists():
        sys.exit("ganlab: run this in the repository's root (where dvc.yaml is)")
    common, own = plan(args.patterns)
    if common:
        dvc("repro", *common)  # once here, not once per lane
    every = [stage for stages in own.values() for stage in stages]
    changed = json.loads(dvc("status", "--json", *every, capture=True).stdout or "{}")
    todo = [target for target, stages in own.items() if any(s in changed for s in stages)]
    if not todo:
        print("ganlab: every matching stage is up to date", flush=True)
        return
    if _server.enabled() and not _server.wait_for_server():  # up (again) before both lanes' first stages
        print("ganlab: the stage server did not start: each stage imports torch itself", file=sys.stderr)
    lanes_dir = LANES_DIR.resolve()
    cache_dir = dvc("cache", "dir", capture=True).stdout.strip()
    shares = [todo[i::args.lanes] for i in range(min(args.lanes, len(todo)))]
    # a fixed share of the cores, not one that follows what the other lane is doing at the moment:
    # torch's thread count changes a run's float sums, so a run computes the same bytes every time
    threads = int(os.environ.get("OMP_NUM_THREADS") or max(1, usable_cores()[0] // len(shares)))
    lanes = [Lane(lanes_dir / f"lane{i}", cache_dir, common, threads) for i in range(len(shares))]
    print(f"ganlab: {len(todo)} run(s) in {len(lanes)} lanes of {threads} torch thread(s) "
          f"({lanes_dir}/lane*; logs: lane.log there)", flush=True)
    workspace, stop = Workspace(), threading.Event()

    def drive(lane: Lane, share: list[str]) -> None:
        for start in range(0, len(share), BATCH):
            if stop.is_set():
                return
            workspace.land(lane.run_batch([s for target in share[start:start + BATCH] for s in own[target]]))

    drivers = [threading.Thread(target=drive, args=pair, daemon=True) for pair in zip(lanes, shares)]
    for driver in drivers:
        driver.start()
    try:
        for driver in drivers:
            driver.join()
    except KeyboardInterrupt:  # the lanes' dvc got it too: land what they finished, start nothing more
        stop.set()
        print("ganlab: interrupted; what finished is kept (run the same command to go on)", file=sys.stderr)
        for driver in drivers:
            driver.join()
    finally:
        workspace.close()
        for lane in lanes:
            lane.remove()
    if stop.is_set():
        sys.exit(130)
    left = [target for target in todo if not set(own[target]) <= workspace.landed]
    if left:
        print(f"ganlab: {len(left)} run(s) failed in a lane; running them here, where the error shows: "
              f"{' '.join(left)}", file=sys.stderr, flush=True)
        dvc("repro", *left)
    print(f"ganlab: {len(todo)} run(s) done; their outputs and dvc.lock entries are in this workspace", flush=True)


if __name__ == "__main__":
    main()

"""How many torch threads a stage takes: its share of the cores it can actually have.

Two trainings that each take every core run far slower together than one alone (measured on 2
cores, DCGAN-32 in bf16: 1,440 img/s alone, 53 + 56 img/s for two at once with 2 threads each).
So each stage counts the cores its process may use (CPU affinity, capped by a cgroup CPU quota:
a container's `--cpus`), the ganlab stages running on the machine (each registers a file named by
its pid under COMPUTING while it runs) and, inside `dvc exp run --queue`, DVC's live workers, and
takes cores // that many threads. A training re-checks every few seconds (a stage that started or
ended since changes its share). An `OMP_NUM_THREADS` the user set wins: nothing is changed, but
the stage still registers, so the others count it.
"""
from __future__ import annotations

import atexit
import json
import math
import os
import sys
import tempfile
from pathlib import Path

from pipeline.core.env import EXP_COPIES, QUEUE_WORKERS, workspace_root

COMPUTING = Path(tempfile.gettempdir()) / f"ganlab-{os.getuid() if hasattr(os, 'getuid') else 'user'}" / "computing"
CGROUP_V2 = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1 = Path("/sys/fs/cgroup/cpu")
_USER_THREADS = os.environ.get("OMP_NUM_THREADS")  # as the user started us, before we set it


def cgroup_cpu_limit(v2: Path = CGROUP_V2, v1: Path = CGROUP_V1) -> float | None:
    """The CPU quota of this process's cgroup in cores (`docker run --cpus 1.5`: 1.5), None if unlimited."""
    try:
        quota, period = v2.read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((v1 / "cpu.cfs_quota_us").read_text())
        return None if quota <= 0 else quota / int((v1 / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None


def usable_cores() -> tuple[int, str]:
    """(cores this process can have, what limits it): its affinity mask, capped by the cgroup quota."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    limit = cgroup_cpu_limit()
    if limit is not None and math.floor(limit) < affinity:
        return max(1, math.floor(limit)), f"a CPU quota of {limit:g} cores"
    if affinity < (os.cpu_count() or affinity):
        return affinity, f"an affinity of {affinity} of {os.cpu_count()} cores"
    return affinity, f"{affinity} cores"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # raises if the process is gone
        return True
    except OSError:
        return False


def _started(pid: int) -> str | None:
    """The process's start time (Linux), so a pid the system reused does not count as a stage."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def register(folder: Path | None = None) -> None:
    """Count this process as a running stage until it ends."""
    folder = folder or COMPUTING
    folder.mkdir(parents=True, exist_ok=True)
    own = folder / str(os.getpid())
    own.write_text(json.dumps({"started": _started(os.getpid()), "argv": sys.argv[:3]}))
    atexit.register(unregister, folder)


def unregister(folder: Path | None = None) -> None:
    ((folder or COMPUTING) / str(os.getpid())).unlink(missing_ok=True)


def running_stages(folder: Path | None = None) -> int:
    """ganlab stages alive on this machine (this one included, once registered); stale records are removed."""
    alive = 0
    for record in (folder or COMPUTING).glob("[0-9]*"):
        try:
            pid, started = int(record.name), json.loads(record.read_text())["started"]  # None without /proc
        except (OSError, ValueError, KeyError):
            pid = None
        if pid is not None and _alive(pid) and started == _started(pid):
            alive += 1
        else:
            record.unlink(missing_ok=True)
    return alive


def queue_workers(root: Path) -> int:
    """How many `dvc queue start -j N` workers of the repository at `root` are alive: DVC writes
    each worker's pid to QUEUE_WORKERS/dvc-exp-worker-N.json and its return code there when it
    ends. 0 outside a queue."""
    live = 0
    for record_file in (root / QUEUE_WORKERS).glob("dvc-exp-worker-*.json"):
        try:
            record = json.loads(record_file.read_text())
            pid = int(record["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        live += _alive(pid) and record.get("returncode") is None
    return live


def fair_share() -> tuple[int, str]:
    """(torch threads for this process, why): usable cores // the stages or queue workers sharing them."""
    cores, limit = usable_cores()
    in_queue = EXP_COPIES in f"{Path.cwd()}/"
    workers = queue_workers(workspace_root()) if in_queue else 0
    sharing = max(1, workers, running_stages())
    who = (f"{workers} dvc queue workers" if workers >= sharing and workers > 1
           else f"{sharing} ganlab stage{'s' if sharing > 1 else ''}")
    return max(1, cores // sharing), f"{limit} for {who}"


def _set_threads(threads: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(threads)  # for a torch imported later
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def user_set_threads() -> bool:
    return bool(_USER_THREADS)


def share_cores() -> str | None:
    """At a stage's start: register it and take its share. Returns a line for the log when the
    share is not what torch would take by itself (every core), None otherwise."""
    register()
    if _USER_THREADS:
        return None
    threads, why = fair_share()
    _set_threads(threads)
    return None if threads >= (os.cpu_count() or 1) else f"{why}: {threads} torch thread(s) here"


def rebalance() -> str | None:
    """During a long computation: take the share again if stages started or ended since; a line
    for the log when it changed."""
    if _USER_THREADS or not (COMPUTING / str(os.getpid())).exists():
        return None
    threads, why = fair_share()
    if threads == int(os.environ.get("OMP_NUM_THREADS", 0) or 0):
        return None
    _set_threads(threads)
    return f"{why}: now {threads} torch thread(s) here"

"""Where a stage process's wall time goes, for benchmarks: named phases summed in-process, written
as one JSON line per process to the file GANLAB_PHASES names (nothing is written without it).

A sweep is many short runs, so what a run spends outside training and evaluation (interpreter
start-up, the MLflow store, logging, checkpoints) decides its cost; benchmarks/sweep_run.py and
benchmarks/default_run.py read these lines next to DVC's own stage times.
"""
from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

ENV = "GANLAB_PHASES"
WORK = ("steps", "Monitoring", "evaluate")  # training and evaluation; the rest of a stage is overhead
OVERHEAD = {"interpreter start-up and imports": ("startup",),
            "MLflow (store, metrics, images, models)": ("Tracking", "mlflow"),
            "checkpoints and run files": ("Checkpointing", "Publishing"),
            "loading data, building nets": ("setup",)}

_seconds: dict[str, float] = defaultdict(float)
# set by stages/_server.py in a stage it forked: when the stage's command began (Unix time)
_COMMAND_STARTED = os.environ.pop("GANLAB_STAGE_STARTED", None)


@contextmanager
def timed(phase: str):
    """Add the block's wall time to `phase` (blocks may nest; each phase counts its own)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        _seconds[phase] += time.perf_counter() - start


def process_age_s() -> float:
    """Seconds since this stage's command began (interpreter start-up included; for a stage forked
    by the stage server, since the command that asked for it began); 0.0 where /proc is absent."""
    if _COMMAND_STARTED:
        return max(0.0, time.time() - float(_COMMAND_STARTED))
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))


def record_startup() -> None:
    """Called when a stage's code begins: the time before it is interpreter start-up and imports."""
    _seconds["startup"] = process_age_s()


def write(stage: str) -> None:
    """Append this process's phases to $GANLAB_PHASES (when set): its whole age as `process`, where
    and when (`end`, Unix time) it ended."""
    target = os.environ.get(ENV)
    if not target:
        return
    line = {"stage": stage, "pid": os.getpid(), "cwd": os.getcwd(), "end": round(time.time(), 3),
            "process": round(process_age_s(), 3), "forked": _COMMAND_STARTED is not None,
            **{name: round(seconds, 3) for name, seconds in _seconds.items()}}
    with open(target, "a") as out:  # one short line per process: appends do not interleave
        out.write(json.dumps(line) + "\n")


def attribute(line: dict) -> tuple[float, dict[str, float]]:
    """(training and evaluation seconds, overhead seconds by cause) of one process's line; what no
    phase covers is "other, in the stage process"."""
    work = sum(line.get(phase, 0.0) for phase in WORK)
    overhead = {cause: sum(line.get(phase, 0.0) for phase in phases) for cause, phases in OVERHEAD.items()}
    overhead["other, in the stage process"] = line["process"] - work - sum(overhead.values())
    return work, overhead

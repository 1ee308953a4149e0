"""Progress the way each reader wants it: tqdm bars with an ETA on a terminal, one plain line per
finished unit (an epoch, a set of features, a dataset read) where stderr is a log (`dvc repro`
output, CI), which carriage-return redraws would fill with half-lines."""
from __future__ import annotations

import sys

from tqdm import tqdm


def on_terminal() -> bool:
    return sys.stderr.isatty()


def bar(iterable=None, *, quiet: bool = False, **kwargs) -> tqdm:
    """A tqdm bar on a terminal (never left behind, redrawn at most every 2 s); silent in a log,
    or when `quiet` (the DDP processes other than rank 0)."""
    kwargs.setdefault("leave", False)
    kwargs.setdefault("mininterval", 2)
    return tqdm(iterable, disable=quiet or not on_terminal(), dynamic_ncols=True, **kwargs)


def line(message: str) -> None:
    """One line in a log (on a terminal the bars say it)."""
    if not on_terminal():
        print(message, file=sys.stderr, flush=True)


def eta(done: int, total: int, elapsed_s: float) -> str:
    """'ETA 3 min 20 s' for the units left at the pace so far ('' before the first is done)."""
    if done <= 0 or done >= total:
        return ""
    left = elapsed_s / done * (total - done)
    minutes, seconds = divmod(int(round(left)), 60)
    return f"ETA {minutes} min {seconds:02d} s" if minutes else f"ETA {seconds} s"


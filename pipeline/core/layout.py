"""Where each stage reads and writes, relative to the repository root (the DVC working dir)."""
import json
import os
import shutil
from pathlib import Path
from typing import Callable

PREPARED = Path("data/prepared")
RESULTS = Path("results")
CLASSIFIERS = Path("models/classifier")

# samples/ grids of a conditional model: one row per class (up to GRID_MAX_ROWS), one column per fixed z
GRID_COLUMNS = 8
GRID_MAX_ROWS = 64


def prepared_dir(dataset: str) -> Path:
    return PREPARED / dataset


def classifier_path(dataset: str) -> Path:
    """The dataset classifier's checkpoint; its test accuracy sits beside it as <dataset>.json."""
    return CLASSIFIERS / f"{dataset}.pt"


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """`write(tmp)` makes a file or folder `tmp` beside `path`, which then replaces `path` in one
    rename: a killed stage never leaves half of it (every writer of an output goes through here)."""
    tmp = path.with_name(path.name + ".tmp")
    _remove(tmp)  # a killed earlier attempt's
    try:
        write(tmp)
    except BaseException:
        _remove(tmp)
        raise
    if tmp.is_dir() and path.is_dir():  # a folder cannot be renamed over a non-empty one
        shutil.rmtree(path)
    os.replace(tmp, path)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def save_torch_atomic(obj, path: Path) -> None:
    import torch  # deferred: the layout is read by stages that never load torch

    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def write_json_atomic(path: Path, payload: dict, **dumps) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(payload, **({"indent": 2, "sort_keys": True} | dumps))))

"""Environment switches shared by the data sources and the weight loaders."""
from __future__ import annotations

import os
from pathlib import Path

OFFLINE_ENV = "GANLAB_OFFLINE"
DATA_DIRS_ENV = "GANLAB_DATA_DIRS"
RAW_DIR = Path("data/raw")  # where downloads land, relative to the repository root
SYSTEM_DATA_DIR = Path("/usr/share/datasets")  # Debian's dataset-* packages


def offline() -> bool:
    """True when nothing may be downloaded (tests, CI, air-gapped machines)."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def data_dirs() -> list[Path]:
    """Folders searched for dataset files, in order: $GANLAB_DATA_DIRS, data/raw/, /usr/share/datasets/."""
    extra = [Path(p).expanduser() for p in os.environ.get(DATA_DIRS_ENV, "").split(":") if p.strip()]
    return [*extra, RAW_DIR, SYSTEM_DATA_DIR]

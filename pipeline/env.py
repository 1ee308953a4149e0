"""Environment switches shared by the data sources and the weight loaders."""
from __future__ import annotations

import os
from pathlib import Path

OFFLINE_ENV = "GANLAB_OFFLINE"
DATA_DIRS_ENV = "GANLAB_DATA_DIRS"
RAW_DIR = Path("data/raw")  # where downloads land, relative to the repository root
# Small official files that ship inside the repository (data/embedded/README.md): the default
# studies run on them offline. Absolute, so tests that change directory still find them.
EMBEDDED_DIR = Path(__file__).resolve().parents[1] / "data" / "embedded"
SYSTEM_DATA_DIR = Path("/usr/share/datasets")  # Debian's dataset-* packages


def offline() -> bool:
    """True when nothing may be downloaded (tests, CI, air-gapped machines)."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def pick_device(requested: str):
    """torch.device for `device: auto | cpu | cuda` (auto: a GPU when there is one)."""
    import torch  # deferred: validating params needs no torch

    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def pick_precision(requested: str, device) -> str:
    """'fp32' or 'bf16' for `precision: fp32 | bf16 | auto` on `device`. auto: bf16 autocast where
    the hardware computes bf16 natively (a CUDA GPU with bf16; a CPU with AVX512-BF16 or AMX),
    fp32 elsewhere, where bf16 is emulated and slower than fp32."""
    import torch  # deferred: validating params needs no torch

    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return "bf16" if native else "fp32"


def data_dirs() -> list[Path]:
    """Folders searched for dataset files, in order: $GANLAB_DATA_DIRS, data/raw/, the embedded
    files, /usr/share/datasets/. Every file is verified by checksum, so where it is found does
    not change what it is."""
    extra = [Path(p).expanduser() for p in os.environ.get(DATA_DIRS_ENV, "").split(":") if p.strip()]
    return [*extra, RAW_DIR, EMBEDDED_DIR, SYSTEM_DATA_DIR]

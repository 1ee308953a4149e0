"""Environment switches shared by the data sources and the weight loaders."""
from __future__ import annotations

import os
from pathlib import Path

OFFLINE_ENV = "GANLAB_OFFLINE"
DATA_DIRS_ENV = "GANLAB_DATA_DIRS"
RAW_DIR = Path("data/raw")  # where downloads land, relative to the repository root
# Small official files that ship inside the repository (data/embedded/README.md): the default
# studies run on them offline. Absolute, so tests that change directory still find them.
EMBEDDED_DIR = Path(__file__).resolve().parents[2] / "data" / "embedded"
SYSTEM_DATA_DIR = Path("/usr/share/datasets")  # Debian's dataset-* packages
EXP_COPIES = "/.dvc/tmp/exps/"  # where `dvc exp run --queue / --temp` run their copy of the repository
LANES = "/.dvc/tmp/lanes/"  # where tools/run_lanes.py runs its copies (git worktrees)
QUEUE_WORKERS = ".dvc/tmp/exps/celery"  # `dvc queue start` records each worker here: dvc-exp-worker-N.json


def offline() -> bool:
    """True when nothing may be downloaded (tests, CI, air-gapped machines)."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def workspace_root() -> Path:
    """The user's repository: the working directory, or the one a temporary copy was made from
    (`dvc exp run --queue / --temp`, a lane of tools/run_lanes.py)."""
    cwd = f"{Path.cwd()}/"
    for copies in (EXP_COPIES, LANES):
        if copies in cwd:
            return Path(cwd.split(copies)[0]).resolve()
    return Path(cwd).resolve()


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


def code_version(root: Path = EMBEDDED_DIR.parents[1]) -> str:
    """The git commit the code was run from, '+dirty' when a tracked file other than params.yaml /
    dvc.lock differs from it (the params are recorded with each run), 'unknown' outside a git
    checkout: results name the code that made them."""
    import subprocess

    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True,
                                text=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":!params.yaml", ":!dvc.lock"], cwd=root,
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def machine(device) -> str:
    """What computed a run, in words (timings are only comparable on the same machine)."""
    import platform

    import torch  # deferred: validating params needs no torch

    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, {os.cpu_count()} CPU cores"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"

"""One experiment trained by several processes: PyTorch DDP under torchrun.

    torchrun --standalone --nproc_per_node N -m stages.train EXPERIMENT

Every process holds the whole (small, uint8) training set and draws the same data order and
latents as a one-process run; each takes its 1/N slice of every global batch of `batch_size`
images (so the global batch, and the optimiser steps per epoch, are those of a one-process run),
and DDP averages the gradients. Batch norm is synchronised over the processes (on CUDA torch's
SyncBatchNorm; on the CPU, where torch's has no kernels, `CpuSyncBatchNorm` below), so the
statistics are those of the global batch: up to float summation order, the run is the one-process
run. Rank 0 alone writes checkpoints, samples, metrics and the MLflow run (pipeline.train.callbacks
picks each process's callbacks); the checkpoints hold the plain (unwrapped) nets, so evaluation and
resume read them with one process or with N. Every function here is a no-op in one process.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import torch
import torch.distributed as dist
from torch import nn

from pipeline.core import cores
from pipeline.core.errors import ConfigError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def world() -> World:
    """This process's place among torchrun's processes (rank 0 of 1 without torchrun)."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def launched_by_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or int(os.environ.get("WORLD_SIZE", "1")) > 1


def relaunch(processes: int, device: torch.device, module_args: list[str]) -> None:
    """Replace this process by `torchrun --nproc_per_node processes -m <module_args>` (the `processes:`
    setting under `dvc repro`). On the CPU each process gets its share of the cores."""
    import sys

    if device.type == "cuda" and processes > torch.cuda.device_count():
        raise ConfigError(f"processes: {processes} needs one GPU each, this machine has {torch.cuda.device_count()}: "
                          f"set processes to at most {torch.cuda.device_count()}")
    if device.type == "cpu" and not cores.user_set_threads():  # this stage's share, split over its processes
        os.environ["OMP_NUM_THREADS"] = str(max(1, cores.fair_share()[0] // processes))
    cores.unregister()  # each torchrun process registers itself
    print(f"ganlab: training in {processes} processes (torchrun, DDP)", file=sys.stderr, flush=True)
    os.execv(sys.executable, [sys.executable, "-m", "torch.distributed.run", "--standalone",
                              f"--nproc_per_node={processes}", "-m", *module_args])


def start(device: torch.device) -> World:
    """Join torchrun's process group when launched by torchrun (gloo on the CPU, NCCL on CUDA)."""
    if int(os.environ.get("WORLD_SIZE", "1")) < 2 or dist.is_initialized():
        return world()
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return world()


def stop() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if world().distributed:
        dist.barrier()


def in_turn(action: Callable[[], object]) -> None:
    """`action()` in rank 0 first, then in the other processes: what rank 0 clears away (a
    damaged or stale saved state) the others never read."""
    if world().is_main:
        action()
    barrier()
    if not world().is_main:
        action()


def process_device(device: torch.device) -> torch.device:
    """This process's device: its own GPU under torchrun (LOCAL_RANK), else `device`."""
    w = world()
    return torch.device("cuda", w.local_rank) if device.type == "cuda" and w.distributed else device


def check_distributable(name: str, batch_size: int, terms) -> None:
    """Settings a DDP run cannot honour, named before any work starts."""
    processes = world().size
    if processes == 1:
        return
    if batch_size % processes:
        raise ConfigError(f"{name}: batch_size {batch_size} does not split evenly over {processes} "
                          f"processes: use a batch_size divisible by {processes}, or --nproc_per_node that "
                          f"divides {batch_size}")
    for term in terms:
        if term.not_distributable:
            raise ConfigError(f"{name}: {term.not_distributable}: train it with one process")


def mean_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """The mean of a statistics vector over the processes (each averaged its own slice of a batch)."""
    if not world().distributed:
        return values
    total = values.clone()
    dist.all_reduce(total)
    return total / world().size


class CpuSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm over the global batch of all processes, on the CPU (gloo).

    In training the per-channel sums of x and x^2 are summed over the processes with the
    differentiable all_reduce, so gradients flow through the global statistics as in torch's CUDA
    SyncBatchNorm; in eval mode it is plain batch norm with the running statistics."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not world().distributed:
            return super().forward(x)
        from torch.distributed._functional_collectives import all_reduce

        dims = [0, *range(2, x.dim())]
        xf = x.float()
        local = torch.cat([xf.sum(dims), (xf * xf).sum(dims),
                           torch.tensor([xf.numel() / xf.shape[1]], dtype=xf.dtype)])
        total = all_reduce(local, "sum", dist.group.WORLD)  # differentiable: gradients reach every process
        channels = x.shape[1]
        count = total[-1]
        mean = total[:channels] / count
        var = (total[channels:2 * channels] / count - mean * mean).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_(var.detach() * count / (count - 1), momentum)
        shape = (1, channels) + (1,) * (x.dim() - 2)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """`module` with every batch norm synchronised over the processes (same parameters and buffers,
    same state_dict keys, so checkpoints load into the plain nets)."""
    if not world().distributed:
        return module
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _cpu_sync_batchnorm(module)


def _cpu_sync_batchnorm(module: nn.Module) -> nn.Module:
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            synced = CpuSyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                      child.track_running_stats)
            synced.load_state_dict(child.state_dict())
            synced.train(child.training)
            setattr(module, name, synced)
        else:
            _cpu_sync_batchnorm(child)
    return module


def data_parallel(module: nn.Module, device: torch.device, some_unused: bool = False) -> nn.Module:
    """DDP around `module` (its parameters are broadcast from rank 0, its gradients averaged).
    `some_unused`: some steps leave parameters without gradient (D's real/fake head while only its
    class head is pre-trained); DDP then looks for them every step instead of waiting for them."""
    if not world().distributed:
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=some_unused)


def rank_slice(batch: torch.Tensor) -> torch.Tensor:
    """This process's contiguous 1/N of a global batch (the whole batch with one process)."""
    w = world()
    if not w.distributed:
        return batch
    per_rank = len(batch) // w.size
    return batch[w.rank * per_rank:(w.rank + 1) * per_rank]


def global_draw(make: Callable[[int], torch.Tensor], n: int) -> torch.Tensor:
    """`make(n * processes)`, this process's slice of it: every process draws the global batch's
    random numbers from the same stream, as a one-process run does, and keeps its part."""
    return rank_slice(make(n * world().size))


def local_batch(idx: torch.Tensor, batches: int) -> torch.Tensor:
    """This process's share of the image indices of `batches` global batches (all of them with one)."""
    if not world().distributed:
        return idx
    return torch.cat([rank_slice(part) for part in idx.chunk(batches)])

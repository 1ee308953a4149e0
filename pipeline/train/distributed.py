"""One experiment trained by several processes: PyTorch DDP under torchrun.

    torchrun --standalone --nproc_per_node N -m stages.train EXPERIMENT

Every process holds the whole (small, uint8) training set and draws the same data order and
latents as a one-process run; each takes its 1/N slice of every global batch of `batch_size`
images (so the global batch, and the optimiser steps per epoch, are those of a one-process run),
and DDP averages the gradients. Batch norm is synchronised over the processes (on CUDA torch's
SyncBatchNorm; on the CPU, where torch's has no kernels, `CpuSyncBatchNorm` below), so the
statistics are those of the global batch: up to float summation order, the run is the one-process
run. Rank 0 alone writes checkpoints, samples, metrics and the MLflow run; the checkpoints hold
the plain (unwrapped) nets, so evaluation and resume read them with one process or with N.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


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

    from pipeline.core.errors import ConfigError

    if device.type == "cuda" and processes > torch.cuda.device_count():
        raise ConfigError(f"processes: {processes} needs one GPU each, this machine has {torch.cuda.device_count()}: "
                          f"set processes to at most {torch.cuda.device_count()}")
    if device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // processes))
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
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            synced = CpuSyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                      child.track_running_stats)
            synced.load_state_dict(child.state_dict())
            synced.train(child.training)
            setattr(module, name, synced)
        else:
            sync_batchnorm(child, device)
    return module


def data_parallel(module: nn.Module, device: torch.device, some_unused: bool = False) -> nn.Module:
    """DDP around `module` (its parameters are broadcast from rank 0, its gradients averaged).
    `some_unused`: some steps leave parameters without gradient (D's real/fake head while only its
    class head is pre-trained); DDP then looks for them every step instead of waiting for them."""
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

"""torch.distributed for the trainer: torchrun (env://) init, DDP or FSDP2, rank-0 helpers.

    torchrun --nproc_per_node 8 -m diffuspeech.cli train config.yaml train.strategy=fsdp

Without torchrun's environment (``RANK``/``WORLD_SIZE``) everything runs in one process and
the helpers are no-ops. gloo on CPU, nccl on CUDA.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.distributed as dist
from torch import nn

from ..compose import ConfigError

STRATEGIES = ("auto", "none", "ddp", "fsdp")


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False  # we created the process group (and destroy it at the end)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device: {name!r} but CUDA is not available; use train.device=cpu or auto")
        if device.index is None:
            device = torch.device(f"cuda:{local_rank}")
    return device


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the torchrun process group when launched by torchrun; else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world <= 1:
        return DistInfo(device=dev)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    created = False
    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, init_method="env://", device_id=dev if dev.type == "cuda" else None)
        created = True
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank, device=dev, initialized_here=created)


def shutdown(info: DistInfo) -> None:
    if info.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def resolve_strategy(name: str, info: DistInfo) -> str:
    if name not in STRATEGIES:
        raise ConfigError(f"train.strategy: {name!r}; valid: {', '.join(STRATEGIES)}")
    if name == "auto":
        return "ddp" if info.enabled else "none"
    if name in ("ddp", "fsdp") and not info.enabled:
        return "none"  # one process: nothing to wrap
    if name == "none" and info.enabled:
        raise ConfigError("train.strategy=none with several processes would train diverging copies; use ddp or fsdp")
    return name


def shard_fsdp(module: nn.Module, info: DistInfo, mixed_bf16: bool = False) -> nn.Module:
    """FSDP2: ``fully_shard`` every member of every ``nn.ModuleList`` (the transformer blocks), then the root."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if mixed_bf16 else MixedPrecisionPolicy()
    for sub in list(module.modules()):
        if isinstance(sub, nn.ModuleList):
            for block in sub:
                fully_shard(block, mp_policy=mp)
    fully_shard(module, mp_policy=mp)
    return module


def wrap_ddp(module: nn.Module, info: DistInfo) -> nn.Module:
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [info.device.index] if info.device.type == "cuda" else None
    return DDP(module, device_ids=ids)


def unwrap(module: nn.Module) -> nn.Module:
    return module.module if hasattr(module, "module") and not hasattr(module, "backbone") else module


def all_reduce_sum(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum of ``value`` over processes (a copy; unchanged in one process)."""
    if not info.enabled:
        return value
    out = value.detach().clone().to(info.device)
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    if not info.enabled:
        return obj
    holder: list[Optional[Any]] = [obj if info.is_main else None]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]

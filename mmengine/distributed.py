"""torchrun / DDP plumbing: process group setup, and the few collectives the trainer needs.

Outside torchrun everything degrades to a single process and the collectives are identities.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


@dataclass
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: str = "cpu"

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pick_device(requested: str) -> str:
    """'auto' -> 'cuda' when available else 'cpu'; 'cuda' without a GPU is a user error."""
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        from mmengine.errors import UserError

        raise UserError(f"run.device='{requested}' but no CUDA device is available (use 'cpu' or 'auto').")
    return requested


def init_distributed(requested_device: str) -> DistInfo:
    """Join the torchrun process group (gloo on CPU, NCCL on GPU) when WORLD_SIZE > 1."""
    device = pick_device(requested_device)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo(device=device)
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if device.startswith("cuda"):
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world_size, device=device)


def broadcast_object(obj, info: DistInfo):
    """Rank 0's ``obj`` on every rank (so decisions such as curriculum stages agree)."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj, info: DistInfo) -> list:
    """[obj of rank 0, obj of rank 1, ...] on every rank."""
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def any_true(flags: list[bool], info: DistInfo) -> list[bool]:
    """Each flag true on every rank when it is true on any rank (a stop request, a NaN loss), in one collective."""
    if not info.enabled:
        return [bool(f) for f in flags]
    t = torch.tensor([1 if f else 0 for f in flags], dtype=torch.int64,
                     device=info.device if info.device.startswith("cuda") else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()

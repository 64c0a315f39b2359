"""torchrun / DDP plumbing: process group setup, and the few collectives the trainer needs.

Outside torchrun everything degrades to a single process and the collectives are identities.

Every collective waits at most ``timeout_s`` (``run.dist_timeout_s``): a rank that hangs without dying
(stopped, deadlocked, stuck on a dead file system) would otherwise leave the others waiting forever.
When a wait times out, :func:`timeout_error` finds out which ranks never arrived (each rank whose wait
ended checks in at the job's key-value store) and says so in one sentence.
"""
from __future__ import annotations

import contextlib
import datetime
import logging
import os
import re
import time
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
    timeout_s: float | None = None  # the collective timeout the process group was created with

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


def init_distributed(requested_device: str, timeout_s: float | None = None) -> DistInfo:
    """Join the torchrun process group (gloo on CPU, NCCL on GPU) when WORLD_SIZE > 1.

    ``timeout_s`` bounds every collective (None: torch's default).
    """
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
        kwargs = {"timeout": datetime.timedelta(seconds=timeout_s)} if timeout_s else {}
        dist.init_process_group(backend=backend, **kwargs)
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world_size, device=device, timeout_s=timeout_s)


_TIMEOUT = re.compile(r"time[d ]?\s*out|timeout", re.IGNORECASE)
_CHECK_IN = "mmengine/timed_out/"


def is_timeout(exc: BaseException, info: DistInfo) -> bool:
    """Whether ``exc`` is a collective that waited longer than the process group's timeout."""
    return info.enabled and isinstance(exc, RuntimeError) and bool(_TIMEOUT.search(str(exc)))


def missing_ranks(info: DistInfo, grace_s: float = 3.0) -> list[int] | None:
    """After a timed-out wait on this rank: the ranks that did not time out too within ``grace_s`` (they never
    came to the collective: stopped, hung, or still busy elsewhere); None when the store cannot be reached."""
    try:
        store = dist.distributed_c10d._get_default_store()
        store.set(f"{_CHECK_IN}{info.rank}", "1")
        deadline = time.monotonic() + grace_s
        while True:
            missing = [r for r in range(info.world_size) if not store.check([f"{_CHECK_IN}{r}"])]
            if not missing or time.monotonic() > deadline:
                return missing
            time.sleep(0.1)
    except (RuntimeError, OSError, ValueError) as e:  # the store lives in torchrun's agent or in rank 0, which may hang
        logger.debug("cannot ask the store which ranks are missing: %s", e)
        return None


def timeout_error(info: DistInfo, where: str):
    """The :class:`~mmengine.errors.TrainingError` for a collective timeout on this rank, naming the missing ranks."""
    from mmengine.errors import TrainingError

    missing = missing_ranks(info)
    if missing:
        who = f"rank{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))} did not"
    else:
        who = "another rank did not"
    limit = f"run.dist_timeout_s={info.timeout_s:g} s" if info.timeout_s else "the process group's timeout"
    return TrainingError(f"{who} reach the collective operation {where} within {limit} (rank {info.rank} waited): it "
                         "hangs, died or is far slower; the job stops (continue from the last checkpoint with "
                         "--run.init_from=resume, or raise run.dist_timeout_s for slow saves).")


@contextlib.contextmanager
def _bounded(info: DistInfo, what: str):
    """A collective whose wait timed out becomes :func:`timeout_error`."""
    try:
        yield
    except RuntimeError as e:
        if is_timeout(e, info):
            raise timeout_error(info, what) from None
        raise


def on_main(fn, info: DistInfo):
    """``fn()`` on rank 0 only; an :class:`~mmengine.errors.MMEngineError` it raises is raised on every rank (the
    same sentence, so that all ranks stop together instead of waiting for rank 0 at the next collective)."""
    from mmengine.errors import MMEngineError

    error = None
    if info.is_main:
        try:
            fn()
        except MMEngineError as e:
            error = e
    if info.enabled:
        error = broadcast_object(error, info)
    if error is not None:
        raise error


def broadcast_object(obj, info: DistInfo):
    """Rank 0's ``obj`` on every rank (so decisions such as curriculum stages agree)."""
    if not info.enabled:
        return obj
    box = [obj]
    with _bounded(info, "broadcast_object"):
        dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj, info: DistInfo) -> list:
    """[obj of rank 0, obj of rank 1, ...] on every rank."""
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size
    with _bounded(info, "all_gather_object"):
        dist.all_gather_object(out, obj)
    return out


def any_true(flags: list[bool], info: DistInfo) -> list[bool]:
    """Each flag true on every rank when it is true on any rank (a stop request, a NaN loss), in one collective."""
    if not info.enabled:
        return [bool(f) for f in flags]
    t = torch.tensor([1 if f else 0 for f in flags], dtype=torch.int64,
                     device=info.device if info.device.startswith("cuda") else "cpu")
    with _bounded(info, "all_reduce"):
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def barrier(info: DistInfo) -> None:
    if info.enabled:
        with _bounded(info, "barrier"):
            dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()

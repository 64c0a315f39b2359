"""What a run writes besides checkpoints: metrics.jsonl, console lines, progress bar, plots,
TensorBoard and wandb (offline). Only rank 0 creates a :class:`RunLogger` with ``enabled=True``.

Also :class:`MFUMeter`: MFU against a GPU's datasheet peak, or the measured matmul rate of this
machine (:func:`measure_matmul_flops`), never above 100%.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import time
import uuid
from pathlib import Path

logger = logging.getLogger(__name__)


def measure_matmul_flops(device: str = "cpu", dtype=None, n: int = 1024, seconds: float = 0.5,
                         trials: int = 5) -> float:
    """Achievable FLOP/s of a square matmul on ``device`` (the denominator of our MFU)."""
    import torch

    dtype = dtype or torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    for _ in range(2):
        a @ b
    sync()
    best = 0.0
    # best of a few short trials: a busy neighbour process only ever makes a trial slower
    for _ in range(trials):
        reps, t0 = 0, time.perf_counter()
        while True:
            a @ b
            reps += 1
            if reps % 2 == 0:
                sync()
                if time.perf_counter() - t0 > seconds / trials:
                    break
        best = max(best, 2 * n ** 3 * reps / (time.perf_counter() - t0))
    return best


# Dense (no sparsity) datasheet peaks in FLOP/s of NVIDIA GPUs, by a substring of
# torch.cuda.get_device_name() and the dtype the matmuls run in. float32 is the plain (non-TF32)
# rate, since PyTorch leaves TF32 matmuls off by default. Longer names first (H100 PCIe before H100).
GPU_PEAK_FLOPS: dict[str, dict[str, float]] = {
    "H200": {"bfloat16": 989e12, "float16": 989e12, "float32": 67e12},
    "H100 PCIe": {"bfloat16": 756e12, "float16": 756e12, "float32": 51e12},
    "H100": {"bfloat16": 989e12, "float16": 989e12, "float32": 67e12},
    "A100": {"bfloat16": 312e12, "float16": 312e12, "float32": 19.5e12},
    "L40S": {"bfloat16": 362e12, "float16": 362e12, "float32": 91.6e12},
    "L4": {"bfloat16": 121e12, "float16": 121e12, "float32": 30.3e12},
    "A10G": {"bfloat16": 70e12, "float16": 70e12, "float32": 31.2e12},
    "RTX 4090": {"bfloat16": 165e12, "float16": 165e12, "float32": 82.6e12},
    "RTX 3090": {"bfloat16": 71e12, "float16": 71e12, "float32": 35.6e12},
    "V100": {"float16": 125e12, "float32": 15.7e12},
    "T4": {"float16": 65e12, "float32": 8.1e12},
}


def datasheet_peak(device_name: str, dtype_name: str) -> float | None:
    """The table's peak for a GPU name and dtype, or None when the GPU or dtype is not listed."""
    for key, peaks in GPU_PEAK_FLOPS.items():
        if key in device_name:
            return peaks.get(dtype_name)
    return None


class MFUMeter:
    """Model FLOPs utilisation that never exceeds 100%.

    The peak is the GPU's datasheet figure for the run's dtype when the GPU is known, else the
    matmul rate measured on this machine. A measured peak is only a lower bound of what the
    machine can do (a busy neighbour slows the measurement, e.g. a short burst at start-up): when a
    step achieves more, the peak is raised to what was achieved, so MFU stays at most 100% and is
    reported against the best rate seen.
    """

    def __init__(self, device: str, dtype_name: str):
        import torch

        name = torch.cuda.get_device_name(device) if device.startswith("cuda") else ""
        sheet = datasheet_peak(name, dtype_name) if name else None
        self.measured = sheet is None
        self.peak = sheet if sheet is not None else _measured_peak(device, dtype_name)
        self.source = f"{name} datasheet, {dtype_name}" if sheet is not None else f"measured matmul rate, {dtype_name}"

    def __call__(self, achieved_flops_per_s: float) -> float:
        if achieved_flops_per_s > self.peak:
            if not self.measured:  # a datasheet figure cannot be beaten: the FLOP count is wrong
                logger.debug("achieved %.3g FLOP/s above the datasheet peak %.3g", achieved_flops_per_s, self.peak)
            self.peak = achieved_flops_per_s
        return achieved_flops_per_s / self.peak


_PEAK_CACHE: dict[tuple[str, str], float] = {}


def _measured_peak(device: str, dtype_name: str) -> float:
    """:func:`measure_matmul_flops` once per process and (device, dtype)."""
    import torch

    key = (device, dtype_name)
    if key not in _PEAK_CACHE:
        _PEAK_CACHE[key] = measure_matmul_flops(device, getattr(torch, dtype_name))
    return _PEAK_CACHE[key]


def _raise_if_disk_full(exc: OSError, path: Path, needed: int) -> None:
    """A full disk while writing ``path``: one sentence naming it and what was needed (TrainingError, exit 1)."""
    from mmengine.run_dir import disk_full, disk_full_error

    if disk_full(exc):
        raise disk_full_error(path, needed) from None


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else (1e308 if value > 0 else -1e308)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


class _TqdmHandler(logging.Handler):
    """Routes log lines through tqdm.write so they do not tear the progress bar."""

    def emit(self, record):
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=sys.stdout)
        except Exception:  # noqa: BLE001  (logging's own contract: a handler reports, never raises)  # pragma: no cover
            self.handleError(record)


def setup_console_logging(level=logging.INFO) -> None:
    """Plain ``message`` lines on stdout for the CLIs (library code only uses logging)."""
    root = logging.getLogger()
    if any(getattr(h, "_mmengine", False) for h in root.handlers):
        return
    h = _TqdmHandler()
    h._mmengine = True  # type: ignore[attr-defined]
    h.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(h)
    root.setLevel(level)


class RunLogger:
    """metrics.jsonl + console + optional progress bar, PNG plots, TensorBoard, wandb.

    A trainer component: :meth:`state_dict` is what a checkpoint keeps (how many records there were
    when it was saved, and the wandb run id); after :meth:`load_state_dict`, :meth:`open` continues
    the logs of the run that wrote the checkpoint: only its first ``records`` records are kept, so
    what a run wrote after its last checkpoint before dying is not repeated; TensorBoard purges its
    later events the same way, and wandb continues the same run. A torn last line of metrics.jsonl
    (a kill or a full disk in mid-write) is dropped with a warning instead of blocking the resume; so
    is a line that is JSON but not a record.

    A full disk while writing metrics raises :class:`~mmengine.errors.TrainingError` naming the file.
    """

    def __init__(self, out_dir: str | Path, log_cfg, *, enabled: bool = True):
        self.enabled = enabled
        self.out_dir = Path(out_dir)
        self.cfg = log_cfg
        self.records: list[dict] = []
        self.wandb_id: str | None = None
        self._resume: dict | None = None  # the state loaded from a checkpoint, until open()
        self._plotted = -1  # len(records) at the last plot
        self._bar = None
        self._tb = None
        self._wandb = None
        self._file = None

    def state_dict(self) -> dict:
        return {"records": len(self.records), "wandb_id": self.wandb_id}

    def load_state_dict(self, state: dict) -> None:
        self._resume = dict(state)
        self.wandb_id = state.get("wandb_id")

    def _read_records(self, initial: int) -> list[dict]:
        lines = self.path.read_text(encoding="utf-8", errors="replace").splitlines()
        old = []
        for n, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            if not isinstance(record, dict):  # a torn line may still parse, e.g. as a number
                logger.warning("%s: line %d is torn (the run was stopped while writing it); it and the %d line(s) "
                               "after it are dropped", self.path, n + 1, len(lines) - n - 1)
                break
            old.append(record)
        keep = self._resume.get("records")
        return old[:keep] if keep is not None else [r for r in old if r.get("iter", 0) <= initial]

    def open(self, *, total: int = 0, initial: int = 0, config_dict: dict | None = None,
             path: Path | None = None) -> None:
        """Start every sink; after :meth:`load_state_dict` the existing metrics.jsonl is continued.

        ``path``: where the metrics go (default ``out_dir/metrics.jsonl``; a new run over an earlier one writes
        aside until its first checkpoint, see :class:`mmengine.run_dir.RunDir`).
        """
        if not self.enabled:
            return
        log_cfg = self.cfg
        resume = self._resume is not None
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.path = Path(path) if path is not None else self.out_dir / "metrics.jsonl"
        if resume and self.path.exists():
            self.records = self._read_records(initial)
            tmp = self.path.with_name(self.path.name + ".tmp")
            text = "".join(json.dumps(r) + "\n" for r in self.records)
            try:
                tmp.write_text(text, encoding="utf-8")
            except OSError as e:
                with contextlib.suppress(OSError):
                    tmp.unlink()
                _raise_if_disk_full(e, self.path, len(text.encode("utf-8")))
                raise
            os.replace(tmp, self.path)
        # open for the whole run (every record is flushed as it is written); close() closes it
        self._file = open(self.path, "a" if resume else "w", encoding="utf-8")  # noqa: SIM115
        if log_cfg.progress and (sys.stderr.isatty() or os.environ.get("MMENGINE_PROGRESS") == "1"):
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, desc="train", unit="it", dynamic_ncols=True, leave=False)
        if log_cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.out_dir / "tensorboard"), purge_step=initial + 1 if resume else None)
            except ImportError:
                logger.warning("log.tensorboard is on but tensorboard is not installed "
                               "(pip install tensorboard); skipping it")
        if log_cfg.wandb:
            try:
                import wandb

                # offline: works without network or account; `wandb sync out_dir/wandb/...` uploads later
                # (the runs before and after a resume share one id, so they sync into one run)
                self.wandb_id = self.wandb_id or uuid.uuid4().hex[:12]
                self._wandb = wandb.init(project=log_cfg.wandb_project, dir=str(self.out_dir), mode="offline",
                                         config=config_dict or {}, id=self.wandb_id, resume="allow")
            except ImportError:
                logger.warning("log.wandb is on but wandb is not installed (pip install wandb); skipping it")

    def log(self, record: dict) -> None:
        """Append one event (``iter``, ``split``, ``loss``, ``lr``, ...) to every enabled sink."""
        if not self.enabled or self._file is None:
            return
        record = _clean(record)
        self.records.append(record)
        line = json.dumps(record) + "\n"
        try:
            self._file.write(line)
            self._file.flush()
        except OSError as e:
            _raise_if_disk_full(e, self.path, len(line.encode("utf-8")))
            raise
        it = record.get("iter", 0)
        scalars = {f"{record.get('split', 'train')}/{k}": v for k, v in record.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "iter"}
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(k, v, it)
        if self._wandb is not None:
            self._wandb.log(scalars, step=it)

    def progress(self, n: int = 1, **postfix) -> None:
        if self._bar is not None:
            self._bar.update(n)
            if postfix:
                self._bar.set_postfix(postfix, refresh=False)

    def plot(self) -> None:
        """Loss and learning-rate curves as out_dir/curves.png (when matplotlib is installed), replaced atomically."""
        if not (self.enabled and self.cfg.plots) or self._plotted == len(self.records):
            return
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            logger.warning("log.plots is on but matplotlib is not installed (pip install matplotlib); skipping plots")
            self.cfg.plots = False
            return
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
        for split in ("train", "val"):
            pts = [(r["iter"], r["loss"]) for r in self.records
                   if r.get("split") == split and r.get("loss") is not None]
            if pts:
                ax1.plot(*zip(*pts), label=split, marker="o" if split == "val" else None)
        ax1.set_xlabel("iteration"), ax1.set_ylabel("loss"), ax1.legend()
        pts = [(r["iter"], r["lr"]) for r in self.records if r.get("split") == "train" and r.get("lr") is not None]
        if pts:
            ax2.plot(*zip(*pts))
        ax2.set_xlabel("iteration"), ax2.set_ylabel("learning rate")
        fig.tight_layout()
        # written aside and renamed: an image viewer never sees half a file
        tmp = self.out_dir / "curves.tmp.png"
        try:
            fig.savefig(tmp, dpi=100)
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink()
            _raise_if_disk_full(e, tmp, 100_000)  # a plot is tens of KB
            raise
        finally:
            plt.close(fig)
        os.replace(tmp, self.out_dir / "curves.png")
        self._plotted = len(self.records)

    def close(self) -> None:
        if not self.enabled or self._file is None:
            return
        if self._bar is not None:
            self._bar.close()
        try:
            self._file.close()
        except OSError as e:  # every record was flushed when written: only a write that already failed is lost
            logger.debug("closing %s: %s", self.path, e)
        self._file = None
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()

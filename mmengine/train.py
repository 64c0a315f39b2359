"""``python -m mmengine.train [CONFIG.toml] [--table.key=value ...]``: the training run.

With no arguments it trains a small masked-diffusion LM on the bundled tiny-Shakespeare corpus
(a few minutes on a 2-core CPU), prints a generated sample and where the checkpoint is.

The loop, top-down: config -> data dir -> mode spec (:mod:`mmengine.modes`) -> model (+ transfer,
freeze: :mod:`mmengine.transfer`) -> AdamW -> a prefetched batch stream whose position is
checkpointed -> steps (warmup + cosine LR times each group's ``lr_scale``, grad accumulation,
clipping, autocast/GradScaler on CUDA) -> evaluation on a fixed validation set every
``eval_interval`` (curriculum decisions on rank 0, broadcast) -> ``ckpt.pt``/``best.pt``.

The out_dir is the run's alone (:mod:`mmengine.run_dir`: a lock, no scratch run over an earlier run's
history, leftovers of interrupted saves cleaned), and a run whose sizes clearly cannot fit is refused
before anything is allocated (:mod:`mmengine.memory`). Every checkpoint records the tokenizer
(:mod:`mmengine.fingerprint`); a resume with a data dir of another vocabulary is refused.

The trainer's pieces are components with ``state_dict()`` / ``load_state_dict()`` (the freeze
controller, the mode's curriculum, each rank's batch stream, the logger, the GradScaler, the step
counters, the out_dir's run id); a checkpoint's ``trainer`` entry is the dict of their states, next to nanoGPT's
``model``/``optimizer``/``iter_num``/``best_val_loss`` keys. Every random choice comes from
``(seed, rank, counter, stream)`` (:mod:`mmengine.rng`), so a run resumed from ``ckpt.pt``
reproduces the uninterrupted run's losses exactly.
"""
from __future__ import annotations

import os
import signal
import sys


def _interrupted_while_starting(signum, frame):  # pragma: no cover (a subprocess test sends the signal)
    # nothing is open for writing yet: leave at once, without a traceback from inside torch's import
    print("interrupted", file=sys.stderr, flush=True)
    os._exit(130)


# `python -m mmengine.train`: a Ctrl-C while torch is still importing is one line too (unless Ctrl-C is ignored,
# as in a background job of a script)
if __name__ == "__main__" and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
    signal.signal(signal.SIGINT, _interrupted_while_starting)

# the imports below come after that handler on purpose: torch takes seconds to import
import contextlib
import gc
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from mmengine import distributed as D
from mmengine.config import (
    Config,
    ConfigError,
    UserError,
    cli_entry,
    ignored_settings,
    load_config,
    to_dict,
)
from mmengine.data.stream import BatchStream, check_mode_data, data_dir_path, open_data, to_device
from mmengine.errors import MMEngineError, TrainingError
from mmengine.modes import build_mode
from mmengine.rng import STREAM_DROPOUT, seed_for
from mmengine.run_dir import RunDir
from mmengine.run_logging import MFUMeter, RunLogger, setup_console_logging
from mmengine.schedule import schedule_from_config

logger = logging.getLogger(__name__)

__all__ = ["TrainResult", "Trainer", "TrainingError", "main", "train"]


class Stateful(Protocol):
    """A trainer component whose state goes into checkpoints."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


def autocast_context(device: str, dtype_name: str):
    """(autocast context, dtype name actually used, GradScaler or None)."""
    device_type = "cuda" if device.startswith("cuda") else "cpu"
    if dtype_name == "auto":
        if device_type == "cuda":
            dtype_name = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        else:
            dtype_name = "float32"
    if dtype_name == "float16" and device_type == "cpu":
        raise ConfigError("run.dtype='float16' needs a CUDA device; use 'float32' or 'bfloat16' on CPU.")
    if dtype_name == "float32":
        return contextlib.nullcontext, dtype_name, None
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}[dtype_name]
    scaler = torch.amp.GradScaler("cuda") if dtype_name == "float16" else None
    return (lambda: torch.autocast(device_type=device_type, dtype=dtype)), dtype_name, scaler


# --- components ----------------------------------------------------------------------------------

@dataclass
class Progress:
    """Step counters: where the run is, its best validation loss, how many NaN roll-backs it took."""

    iter_num: int = 0
    best_val_loss: float = math.inf
    rollbacks: int = 0

    def state_dict(self) -> dict:
        return {"rollbacks": self.rollbacks}

    def load_state_dict(self, state: dict) -> None:
        self.rollbacks = int(state.get("rollbacks", 0))


class _ScalerState:
    """The GradScaler (float16 on CUDA) as a component; ``None`` state when there is none."""

    def __init__(self, scaler):
        self.scaler = scaler

    def state_dict(self):
        return self.scaler.state_dict() if self.scaler is not None else None

    def load_state_dict(self, state) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


@dataclass
class TrainResult:
    """What a finished (or interrupted) run reports back."""

    out_dir: Path
    iter_num: int
    train_losses: dict[int, float] = field(default_factory=dict)  # every step's loss (rank 0)
    val: list[dict] = field(default_factory=list)
    best_val_loss: float | None = None
    checkpoint: Path | None = None
    interrupted: bool = False
    sample: str | None = None
    sample_heading: str = ""


class _StopRequest:
    """SIGINT/SIGTERM set a flag; the loop saves a checkpoint and returns at the next step."""

    def __init__(self):
        self.signal: int | None = None
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self.signal = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


class _Throughput:
    """Steps and wall time since the last log line."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.t0, self.steps = time.perf_counter(), 0

    def seconds_per_step(self) -> float:
        return (time.perf_counter() - self.t0) / max(1, self.steps)


# --- the trainer ---------------------------------------------------------------------------------

class Trainer:
    """One training run; :meth:`run` does the work. Built from a validated :class:`Config`."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.info = D.init_distributed(cfg.run.device, cfg.run.dist_timeout_s)
        self.device = self.info.device
        self.device_type = "cuda" if self.device.startswith("cuda") else "cpu"
        self.out_dir = Path(cfg.run.out_dir)
        self.main = self.info.is_main
        # the out_dir is this run's alone (lock; no scratch run over an earlier run's history) before anything
        # is read from it or written: rank 0 decides, every rank stops with the same sentence
        self.run_dir = RunDir(self.out_dir, resume=cfg.run.init_from == "resume", overwrite=cfg.run.overwrite,
                              enabled=self.main)
        D.on_main(self.run_dir.claim, self.info)
        try:
            self._setup()
        except BaseException:
            self.run_dir.release(failed=True)  # a run that never started leaves the folder as it was
            raise

    def _setup(self) -> None:
        from mmengine.fingerprint import check_fingerprint, tokenizer_fingerprint
        from mmengine.transfer import FreezeController

        cfg = self.cfg
        self.data = open_data(cfg)
        self.meta = self.data.meta
        self.fingerprint = tokenizer_fingerprint(self.data)
        self.ckpt = None
        self.resume_from = self.out_dir / "ckpt.pt"
        if cfg.run.init_from == "resume":
            # ckpt.pt, or the earlier trainer's newest ckpt_<kind>_<iter>.pt (its vocabulary mapped, see upstream_run)
            from mmengine.checkpoint import check_resume_state, check_run_state
            from mmengine.upstream_run import load_for_resume, resume_path

            self.resume_from = resume_path(self.out_dir) or self.resume_from
            self.ckpt = load_for_resume(self.resume_from, cfg, self.meta)
            if self.ckpt.get("upstream"):  # another trainer's file: its optimizer state is mapped in _restore
                check_run_state(self.ckpt, str(self.resume_from))
            else:
                check_resume_state(self.ckpt, str(self.resume_from))
                check_fingerprint(self.ckpt, self.data, f"cannot resume from {self.resume_from}")
        self.mode = build_mode(cfg, self.data)  # the same on every rank: the rank only enters the data order and RNG
        check_mode_data(self.mode, cfg)
        self.autocast, self.dtype_name, self.scaler = autocast_context(self.device, cfg.run.dtype)
        self.raw_model = self._build_model()
        o = cfg.optim
        self.optimizer = self.raw_model.configure_optimizers(o.weight_decay, o.learning_rate, (o.beta1, o.beta2),
                                                             self.device_type)
        self.progress = Progress()
        self.freeze = FreezeController(self.raw_model, cfg.transfer)
        self.rlog = RunLogger(self.out_dir, cfg.log, enabled=self.main)
        self.lr_of = schedule_from_config(cfg.optim, cfg.train.max_iters)
        self._data_state: dict | None = None  # this rank's batch-stream position from the checkpoint
        if self.ckpt is not None:
            try:
                self._restore(self.ckpt)
            except MMEngineError:
                raise
            except (ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
                raise UserError(f"cannot resume from {self.resume_from}: {str(e).rstrip('.')} "
                                "(resume with the configuration the run was started with).") from None
        self.model = self._wrap(self.raw_model)

    def components(self) -> dict[str, Stateful]:
        """The pieces whose states make a checkpoint's ``trainer`` entry (the data stream is per rank, apart)."""
        return {"freeze": self.freeze, "mode": self.mode, "logger": self.rlog, "progress": self.progress,
                "scaler": _ScalerState(self.scaler), "run_dir": self.run_dir}

    # ---- setup ----

    def _build_model(self):
        from mmengine.checkpoint import checkpoint_config, model_from_checkpoint
        from mmengine.transfer import build_run_model

        torch.manual_seed(seed_for(self.cfg.run.seed, 0, 0, 0))  # identical init on every rank
        if self.ckpt is None:
            # transfer + initial freeze happen here; the size is checked once the (source's) architecture is known
            model = build_run_model(self.cfg, self.mode, self.meta, check=self._check_memory)
        else:
            # the checkpoint already holds the transferred trunk: the transfer source is never re-read
            source = str(self.resume_from)
            self._check_memory(checkpoint_config(self.ckpt, source), source)
            model = model_from_checkpoint(self.ckpt, source=source)
            self.mode.check_model(model, source)
        return model.to(self.device)

    def _check_memory(self, config, source: str | None = None) -> None:
        """Refuse sizes that clearly cannot fit (weights, AdamW state, one micro-batch) before they are allocated."""
        from mmengine.memory import check_training_fits

        check_training_fits(config, batch_size=self.cfg.data.batch_size, seq_len=self.cfg.data.block_size,
                            device=self.device, dtype_name=self.dtype_name, source=source)

    def _restore(self, ckpt: dict) -> None:
        """Optimizer, counters and every component's state; this rank's data position."""
        from mmengine.checkpoint import check_optimizer_state, upgrade_trainer_state
        from mmengine.upstream_run import is_foreign, restore_optimizer

        restore_optimizer(self.optimizer, self.raw_model, ckpt)  # another trainer's groups: mapped by parameter name
        check_optimizer_state(self.optimizer, str(self.resume_from))
        trainer = upgrade_trainer_state(ckpt.get("trainer"))
        for name, component in self.components().items():
            if name in trainer:
                component.load_state_dict(trainer[name])
        self.progress.iter_num = int(ckpt.get("iter_num", 0))
        best = ckpt.get("best_val_loss")
        self.progress.best_val_loss = math.inf if best is None else float(best)
        states = trainer.get("data") or []
        if len(states) != self.info.world_size:
            if not is_foreign(ckpt):  # another trainer's file has no data position (load_for_resume said so)
                logger.warning("the checkpoint was written by %d rank(s) and this run has %d, so the data order starts "
                               "over (model, optimizer and schedule continue)", len(states), self.info.world_size)
            return
        self._data_state = states[self.info.rank]
        # a position from other data or another batch size fails here, not mid-run
        BatchStream.check_state(self.mode, self.cfg, self.info, self._data_state)

    def _wrap(self, model):
        if self.cfg.run.compile:
            model = torch.compile(model)
        if self.info.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            model = DDP(model, device_ids=[self.info.local_rank] if self.device_type == "cuda" else None)
        return model

    def close(self) -> None:
        """Drop the DDP wrappers while the interpreter is still fully alive.

        DDP objects sit in reference cycles, so without this they are freed only at interpreter exit,
        after the process group is gone; gloo's worker threads then touch Python during finalisation
        and the process aborts ("terminate called without an active exception").
        """
        if hasattr(self, "raw_model"):
            self.model = self.raw_model
        gc.collect()
        self.run_dir.release()

    def batch_stream(self) -> BatchStream:
        """The training batches from the current (or resumed) position."""
        return BatchStream(self.mode, self.cfg, self.info, self._data_state, self.mode.batch_state())

    # ---- checkpoints ----

    def save(self, stream: BatchStream, name: str = "ckpt.pt") -> Path:
        """All ranks call this (their data positions are gathered); rank 0 writes."""
        from mmengine.checkpoint import save_checkpoint

        positions = D.gather_objects(stream.state_dict(), self.info)
        path = self.out_dir / name
        if self.main:
            trainer = {name: c.state_dict() for name, c in self.components().items()}
            trainer.update(data=positions, data_meta=self.meta.to_dict(), data_dir=str(data_dir_path(self.cfg)))
            best = self.progress.best_val_loss
            save_checkpoint(path, self.raw_model, self.optimizer, iter_num=self.progress.iter_num,
                            best_val_loss=None if math.isinf(best) else best, config=to_dict(self.cfg), trainer=trainer,
                            tokenizer_fingerprint=self.fingerprint)
            self.rlog.path = self.run_dir.saved(path) or self.rlog.path  # a new run's history replaces the old one
        D.barrier(self.info)
        return path

    # ---- one step ----

    def forward_backward(self, it: int, stream: BatchStream) -> float:
        """Forward and backward over the step's micro-batches; returns the step's loss (not yet applied)."""
        accum = self.cfg.train.gradient_accumulation_steps
        # dropout masks are a function of (seed, rank, step) too
        torch.manual_seed(seed_for(self.cfg.run.seed, self.info.rank, it, STREAM_DROPOUT))
        loss_sum = torch.zeros((), device=self.device)
        for micro in range(accum):
            batch = next(stream)
            # DDP: gradients are all-reduced on the last micro-batch only
            sync = not self.info.enabled or micro == accum - 1
            ctx = contextlib.nullcontext() if sync else self.model.no_sync()
            with ctx, self.autocast():
                _, loss = self.mode.loss(self.model, batch)
                loss = loss / accum
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
            else:
                loss.backward()
            loss_sum += loss.detach()
        return float(loss_sum)

    def optimizer_step(self) -> None:
        """Clip, step (through the GradScaler when there is one), clear the gradients."""
        if self.cfg.train.grad_clip > 0:
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), self.cfg.train.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def _apply_lr(self, it: int) -> float:
        """lr = schedule(it) x the group's lr_scale, set on every step, so the schedule never overwrites the
        trunk's unfreeze multiplier; returns the scheduled lr."""
        lr = self.lr_of(it)
        self.freeze.apply_lr(self.optimizer, lr)
        return lr

    def _unfreeze(self, it: int) -> None:
        self.freeze.unfreeze(it)
        if self.info.enabled:
            # DDP registers only parameters that required grad when it was built
            self.model = self._wrap(self.raw_model)
        status = self.raw_model.print_parameter_status() if self.main else {}
        if self.main:
            logger.info("iter %d: trunk unfrozen; "
                        "its learning rate is now the schedule's x %g", it, self.freeze.multiplier)
        self.rlog.log({"iter": it, "split": "train", "event": "unfreeze", "loss": None, "lr": self.lr_of(it),
                       "trunk_lr_multiplier": self.freeze.multiplier, **{f"params_{k}": v for k, v in status.items()}})

    def _non_finite(self, it: int, loss: float) -> None:
        """A NaN/inf loss (on any rank): roll back to the last checkpoint and skip the batch, or stop."""
        from mmengine.checkpoint import load_checkpoint

        self.optimizer.zero_grad(set_to_none=True)
        shown = loss if not math.isfinite(loss) else "non-finite on another rank"
        if self.cfg.run.nan_policy != "rollback":
            raise TrainingError(f"loss became {shown} at iteration {it + 1}; lower optim.learning_rate, "
                                "check the data, or set run.nan_policy='rollback'.")
        path = self.out_dir / "ckpt.pt"
        if self.progress.rollbacks >= self.cfg.run.max_rollbacks or not path.is_file():
            why = ("no checkpoint to roll back to" if not path.is_file()
                   else f"{self.progress.rollbacks} roll-backs already")
            raise TrainingError(f"loss became {shown} at iteration {it + 1} ({why}); "
                                "lower optim.learning_rate or check the data.")
        ckpt = load_checkpoint(path, map_location=self.device)
        self.raw_model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.progress.rollbacks += 1
        self.progress.iter_num += 1
        logger.warning("loss became %s at iteration %d: rolled back to the weights of iteration %d "
                       "and skipping the batch",
                       shown, it + 1, int(ckpt.get("iter_num", 0)))

    # ---- the loop ----

    def run(self) -> TrainResult:
        tcfg, prog = self.cfg.train, self.progress
        result = TrainResult(out_dir=self.out_dir, iter_num=prog.iter_num)
        self._start()
        val_batches = [(g, to_device(b, self.device)) for g, b in self.mode.val_batches()]
        stream = self.batch_stream()
        pace = _Throughput()
        try:
            with _StopRequest() as stop:
                self.raw_model.train()
                while prog.iter_num < tcfg.max_iters:
                    it = prog.iter_num
                    if self.freeze.due(it):
                        self._unfreeze(it)
                    lr = self._apply_lr(it)
                    loss = self.forward_backward(it, stream)
                    # one collective per step: every rank sees a NaN or a stop request of any rank
                    non_finite, stop_requested = D.any_true([not math.isfinite(loss), stop.signal is not None],
                                                            self.info)
                    if non_finite:
                        self._non_finite(it, loss)
                        continue
                    self.optimizer_step()
                    prog.iter_num += 1
                    pace.steps += 1
                    if self.main:
                        result.train_losses[prog.iter_num] = loss
                    self.rlog.progress(1, loss=f"{loss:.4f}")
                    if prog.iter_num % tcfg.log_interval == 0 or prog.iter_num == tcfg.max_iters:
                        self._log_step(loss, lr, pace)
                    if prog.iter_num % tcfg.eval_interval == 0 or prog.iter_num == tcfg.max_iters:
                        stream = self._eval_and_save(val_batches, stream, result, lr)
                        pace.reset()
                    if stop_requested:
                        self._stop(stop.signal, stream, result)
                        break
        except RuntimeError as e:
            if D.is_timeout(e, self.info):  # e.g. DDP's gradient all-reduce inside backward()
                raise D.timeout_error(self.info, f"at iteration {prog.iter_num + 1}") from None
            raise
        finally:
            stream.close()
            self._close_logs(failing=sys.exc_info()[0] is not None)
        result.iter_num = prog.iter_num
        result.best_val_loss = None if math.isinf(prog.best_val_loss) else prog.best_val_loss
        result.checkpoint = self.out_dir / "ckpt.pt"
        if self.main:
            result.val = [r for r in self.rlog.records if r.get("split") == "val"]
        return result

    def _close_logs(self, failing: bool) -> None:
        """Last plot and close; while an error is on its way out, a second one (the same full disk) must not hide it."""
        try:
            self.rlog.plot()
        except Exception:
            if not failing:
                raise
            logger.debug("the last plot failed too", exc_info=True)
        finally:
            self.rlog.close()

    def _start(self) -> None:
        """Output folder (leftovers, history), logs and the opening lines of the console."""
        cfg, info = self.cfg, self.info
        metrics = self.run_dir.prepare() if self.main else None
        self.rlog.open(total=cfg.train.max_iters, initial=self.progress.iter_num, config_dict=to_dict(cfg),
                       path=metrics)
        # the rate of the dtype the matmuls run in (autocast), so MFU is not flattered by a slower baseline
        self.mfu = MFUMeter(self.device, self.dtype_name)
        if not self.main:
            return
        g = self.raw_model.config
        logger.info("mode: %s | data: %s (%d train tokens, vocab %d) | model: %.2fM parameters, %d layers, "
                    "%d wide | device %s, %s%s",
                    self.mode.describe(), data_dir_path(cfg), len(self.data.tokens("train")), self.meta.vocab_size,
                    self.raw_model.get_num_params() / 1e6, g.n_layer, g.n_embd, self.device, self.dtype_name,
                    f", {info.world_size} ranks" if info.enabled else "")
        self.raw_model.print_parameter_status()
        if self.ckpt is not None:
            logger.info("resumed from %s at iteration %d", self.resume_from, self.progress.iter_num)
        self._warn_about_settings()
        logger.info("MFU below is relative to %.1f GFLOP/s (%s)", self.mfu.peak / 1e9, self.mfu.source)

    def _log_step(self, loss: float, lr: float, pace: _Throughput) -> None:
        cfg, info = self.cfg, self.info
        dt = pace.seconds_per_step()
        tok_s = cfg.train.gradient_accumulation_steps * cfg.data.batch_size * cfg.data.block_size * info.world_size / dt
        # a frozen trunk runs forward only (no backward below the head): 2N of the 6N FLOPs
        flops = self.raw_model.flops_per_token() / (3 if self.freeze.frozen else 1)
        mfu = self.mfu(flops * tok_s / info.world_size)
        it = self.progress.iter_num
        self.rlog.log({"iter": it, "split": "train", "loss": loss, "lr": lr, "tokens_per_s": tok_s, "mfu": mfu,
                       "ms_per_iter": dt * 1000})
        if self.main:
            logger.info("iter %5d | loss %.4f | lr %.2e | %6.0f tok/s | %4.1f ms/it | MFU %.1f%%",
                        it, loss, lr, tok_s, dt * 1000, 100 * mfu)
        pace.reset()

    def _stop(self, signum: int | None, stream: BatchStream, result: TrainResult) -> None:
        name = signal.Signals(signum).name if signum else "a signal on another rank"
        path = self.save(stream)
        if self.main:
            logger.info("stopped by %s at iteration %d; checkpoint saved to %s (continue with --run.init_from=resume)",
                        name, self.progress.iter_num, path)
        result.interrupted = True

    def _warn_about_settings(self) -> None:
        """Settings that are valid but will not do what they seem to (rank 0 only)."""
        cfg = self.cfg
        ignored = ignored_settings(cfg)
        if ignored:
            logger.warning("train.training_type='%s' does not read %s; "
                           "they are ignored", cfg.train.training_type, ", ".join(ignored))
        at = cfg.transfer.unfreeze_at_iteration
        if at >= cfg.train.max_iters and self.freeze.frozen:
            logger.warning("transfer.unfreeze_at_iteration=%d is not before train.max_iters=%d, "
                           "so the trunk stays frozen", at, cfg.train.max_iters)
        if self.ckpt is not None and self.ckpt.get("config"):
            # a resume runs with the config given now; say where it differs from the one the run started with
            # (not the settings a resume may well change: how long, how often to report, how fast)
            free = ("run.init_from", "run.compile", "train.max_iters", "train.eval_interval", "train.log_interval",
                    "data.prefetch_depth", "log.")
            saved = _flat(self.ckpt["config"])
            changed = [k for k, v in _flat(to_dict(cfg)).items() if not k.startswith(free) and saved.get(k, v) != v]
            if changed:
                logger.warning("resuming with settings that differ from the checkpoint's: %s", ", ".join(changed))

    def evaluate(self, val_batches) -> dict:
        was_training = self.raw_model.training
        metrics = self.mode.evaluate(self.raw_model, val_batches, self.autocast)
        self.raw_model.train(was_training)
        return metrics

    def _eval_and_save(self, val_batches, stream: BatchStream, result: TrainResult, lr: float) -> BatchStream:
        metrics = self.evaluate(val_batches)
        event = self.mode.observe_eval(metrics) if self.main else None
        # rank 0 decides; every rank adopts its curriculum state and its figures (GPU kernels may differ in the
        # last bit between ranks, and a rank that alone thought the loss improved would wait in best.pt's save)
        mode_state, event, metrics = D.broadcast_object((self.mode.state_dict(), event, metrics), self.info)
        self.mode.load_state_dict(mode_state)
        rec: dict[str, Any] = {"iter": self.progress.iter_num, "split": "val", **metrics, "lr": lr}
        if event:
            rec.update(event[0])
        self.rlog.log(rec)
        improved = metrics["loss"] < self.progress.best_val_loss
        if improved:
            self.progress.best_val_loss = metrics["loss"]
        if self.main:
            extra = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k != "loss" and isinstance(v, float))
            logger.info("iter %5d | val loss %.4f%s%s",
                        self.progress.iter_num, metrics["loss"], f" | {extra}" if extra else "",
                        " (best)" if improved else "")
            if "confusion" in metrics:
                logger.info("confusion (rows: true class, columns: predicted): %s", metrics["confusion"])
            if event:
                logger.info(event[1])
        if event:
            # batches already prefetched were built for the old stage: rebuild from the consumed position
            state = stream.state_dict()
            stream.close()
            stream = BatchStream(self.mode, self.cfg, self.info, state, self.mode.batch_state())
        path = self.save(stream)
        if improved and self.cfg.log.save_best:
            self.save(stream, "best.pt")
        keep = self.cfg.log.keep_every
        if keep and self.progress.iter_num % keep == 0:  # the earlier trainer's numbered files, next to ckpt.pt
            self.save(stream, f"ckpt_{self.cfg.train.training_type}_{self.progress.iter_num}.pt")
        self.rlog.plot()
        result.checkpoint = path
        return stream


def _flat(d: dict, prefix: str = "") -> dict:
    """{'table.key': value} of a nested config dict."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and not prefix:
            out.update(_flat(v, f"{k}."))
        else:
            out[prefix + k] = v
    return out


def train(cfg: Config) -> TrainResult:
    """Run training for a validated config; returns losses, checkpoint path and the end-of-run sample."""
    trainer = Trainer(cfg)
    try:
        result = trainer.run()
        if trainer.main and not result.interrupted and cfg.log.sample_tokens > 0:
            shown = trainer.mode.sample(trainer.raw_model, trainer.meta, trainer.data.tokenizer, cfg)
            if shown is not None:
                result.sample_heading, result.sample = shown
        return result
    finally:
        trainer.close()
        D.cleanup(trainer.info)


def _main(argv: list[str]) -> int:
    # under torchrun only rank 0 talks; the others report warnings and errors
    setup_console_logging(logging.INFO if int(os.environ.get("RANK", "0")) == 0 else logging.WARNING)
    cfg = load_config(argv)
    t0 = time.perf_counter()
    result = train(cfg)
    if result.sample is not None:
        print(f"\n--- {result.sample_heading} ---")
        print(result.sample)
        print("-" * (len(result.sample_heading) + 8))
    if result.checkpoint is not None and int(os.environ.get("RANK", "0")) == 0:
        print(f"checkpoint: {result.checkpoint} ({result.iter_num} iterations, {time.perf_counter() - t0:.0f} s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m mmengine.train``; user mistakes -> one line on stderr, exit code 2 (1 for a failed run),
    130 on Ctrl-C."""
    if signal.getsignal(signal.SIGINT) is _interrupted_while_starting:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # from here on cli_entry turns Ctrl-C into one line
    return cli_entry(_main, argv, "python -m mmengine.train")


if __name__ == "__main__":
    sys.exit(main())

"""``python -m mmengine.train [CONFIG.toml] [--table.key=value ...]``: the training run.

With no arguments it trains a small masked-diffusion LM on the bundled tiny-Shakespeare corpus
(a few minutes on a 2-core CPU), prints a generated sample and where the checkpoint is.

The loop, top-down: config -> data dir -> mode spec (:mod:`mmengine.modes`) -> model (+ transfer,
freeze) -> AdamW -> a prefetched batch stream whose position is checkpointed -> steps (warmup +
cosine LR times each group's ``lr_scale``, grad accumulation, clipping, autocast/GradScaler on
CUDA) -> evaluation on a fixed validation set every ``eval_interval`` (curriculum decisions on rank
0, broadcast) -> ``ckpt.pt``/``best.pt``. Every random choice comes from
``np.random.default_rng([seed, rank, counter, STREAM])`` (and a torch seed derived the same way for
dropout), so a run resumed from ``ckpt.pt`` reproduces the uninterrupted run's losses exactly.
"""
from __future__ import annotations

import contextlib
import functools
import gc
import logging
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmengine import distributed as D
from mmengine.config import Config, ConfigError, UserError, cli_entry, ignored_settings, load_config, to_dict
from mmengine.modes import STREAM_BATCH, STREAM_DROPOUT, ModeSpec, build_mode
from mmengine.run_logging import RunLogger, measure_matmul_flops, setup_console_logging
from mmengine.schedule import schedule_from_config

logger = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """The run cannot go on (e.g. a non-finite loss); the message names the iteration."""


# --- data ------------------------------------------------------------------------------------

def open_data(cfg: Config):
    """The run's DataDir: ``data.dir``, or the bundled corpus prepared on first use."""
    from mmengine.data.dataset import DataDir, default_data_dir

    path = cfg.data.dir or default_data_dir()
    try:
        return DataDir.open(path)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot open data dir '{path}': {str(e).rstrip('.')}.") from None


class BatchStream:
    """Training batches for one rank, assembled ahead of time, with a checkpointable position.

    The position is the sampler's state plus ``counter`` (micro-batches produced), which also
    keys the per-batch RNG; :meth:`state_dict` describes what was *consumed*, not prefetched.
    """

    def __init__(self, mode: ModeSpec, cfg: Config, info: D.DistInfo, state: dict | None, batch_state: Any):
        from mmengine.data.sampler import EpochSampler

        self.mode = mode
        self.cfg = cfg
        self.info = info
        self.batch_state = batch_state
        self.accum = cfg.train.gradient_accumulation_steps
        self.sampler = EpochSampler(mode.num_items("train"), seed=cfg.run.seed, rank=info.rank,
                                    world_size=info.world_size, shuffle=True)
        self.counter = 0
        if state:
            self.sampler.load_state_dict(state["sampler"])
            self.counter = int(state["counter"])
        self._state = self._snapshot()
        self._prefetcher = None
        depth = cfg.data.prefetch_depth
        if depth > 0:
            from mmengine.data.prefetch import Prefetcher

            self._prefetcher = Prefetcher(self._produce, device=info.device, depth=depth, state_fn=self._snapshot)

    def _snapshot(self) -> dict:
        return {"sampler": self.sampler.state_dict(), "counter": self.counter}

    def _produce(self) -> dict:
        idx = self.sampler.next_batch(self.cfg.data.batch_size)
        rng = np.random.default_rng([self.cfg.run.seed, self.info.rank, self.counter, STREAM_BATCH])
        batch = self.mode.train_batch(idx, rng, self.counter // self.accum, self.batch_state)
        self.counter += 1
        return batch

    def __next__(self) -> dict:
        if self._prefetcher is not None:
            batch = next(self._prefetcher)
            self._state = self._prefetcher.state_dict() or self._state
            return batch
        batch = self._produce()
        self._state = self._snapshot()
        return to_device(batch, self.info.device)

    def state_dict(self) -> dict:
        return self._state

    def close(self) -> None:
        if self._prefetcher is not None:
            self._prefetcher.close()
            self._prefetcher = None


def _check_sampler_state(mode: ModeSpec, cfg: Config, info: D.DistInfo, state: dict) -> None:
    from mmengine.data.sampler import EpochSampler

    EpochSampler(mode.num_items("train"), seed=cfg.run.seed, rank=info.rank,
                 world_size=info.world_size).load_state_dict(state["sampler"])


def to_device(batch: dict, device: str) -> dict:
    out = {}
    for k, v in batch.items():
        t = torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v
        out[k] = t.to(device, non_blocking=True) if device != "cpu" else t
    return out


# --- model -----------------------------------------------------------------------------------

_ARCH_KEYS = ("n_layer", "n_head", "n_embd", "bias", "use_rope")


def gpt_config(cfg: Config, mode: ModeSpec, meta, *, transfer: bool):
    """The model's GPTConfig; with a transfer source its trunk shape comes from that checkpoint."""
    from mmengine.model import GPTConfig

    m, tr = cfg.model, cfg.transfer
    args = dict(block_size=cfg.data.block_size, vocab_size=meta.vocab_size, n_layer=m.n_layer, n_head=m.n_head,
                n_embd=m.n_embd, dropout=m.dropout, bias=m.bias, attention_type=m.attention_type, use_rope=m.use_rope,
                attention_backend=m.attention_backend, loss_backend=m.loss_backend,
                freeze_transformer=tr.freeze_transformer and transfer,
                init_from_checkpoint=(tr.init_from_checkpoint or None) if transfer else None,
                unfreeze_at_iteration=tr.unfreeze_at_iteration if tr.unfreeze_at_iteration >= 0 else None,
                unfreeze_lr_multiplier=tr.unfreeze_lr_multiplier)
    args.update(mode.gpt_kwargs())
    if transfer and tr.init_from_checkpoint:
        from mmengine.checkpoint import load_checkpoint

        src = load_checkpoint(tr.init_from_checkpoint).get("model_args") or {}
        changed = {k: src[k] for k in _ARCH_KEYS if k in src and src[k] != args[k]}
        if changed:
            logger.info("transfer: trunk shape taken from %s: %s", tr.init_from_checkpoint,
                        ", ".join(f"{k}={v}" for k, v in changed.items()))
            args.update(changed)
    try:
        return GPTConfig(**args)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"invalid model: {str(e).rstrip('.')}.") from None


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


# --- the run ---------------------------------------------------------------------------------

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


@functools.lru_cache(maxsize=None)
def _peak_flops(device: str, dtype_name: str) -> float:
    """The measured matmul rate MFU is reported against (measured once per process)."""
    return measure_matmul_flops(device, getattr(torch, dtype_name))


def _seed_for(*key: int) -> int:
    return int(np.random.default_rng(list(key)).integers(0, 2**62))


class Trainer:
    """One training run; :meth:`run` does the work. Built from a validated :class:`Config`."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.info = D.init_distributed(cfg.run.device)
        self.device = self.info.device
        self.device_type = "cuda" if self.device.startswith("cuda") else "cpu"
        self.out_dir = Path(cfg.run.out_dir)
        self.main = self.info.is_main
        self.data = open_data(cfg)
        self.meta = self.data.meta
        resume = cfg.run.init_from == "resume"
        self.ckpt = None
        if resume:
            from mmengine.checkpoint import load_checkpoint

            self.ckpt = load_checkpoint(self.out_dir / "ckpt.pt")
        self.mode = build_mode(cfg, self.data)  # the same on every rank: the rank only enters the data order and RNG
        self._build_model()
        self.autocast, self.dtype_name, self.scaler = autocast_context(self.device, cfg.run.dtype)
        self.iter_num = 0
        self.best_val_loss = math.inf
        self.unfrozen_at: int | None = None
        self.rollbacks = 0
        self.rlog: RunLogger | None = None
        self.wandb_id: str | None = None
        self.log_records: int | None = None
        data_state = None
        if self.ckpt is not None:
            try:
                data_state = self._restore(self.ckpt)
                if data_state is not None:
                    # a state from other data or another batch size fails here, not mid-run
                    _check_sampler_state(self.mode, cfg, self.info, data_state)
            except (ValueError, KeyError, TypeError) as e:
                raise UserError(f"cannot resume from {self.out_dir / 'ckpt.pt'}: {str(e).rstrip('.')} "
                                "(resume with the configuration the run was started with).") from None
        self.lr_of = schedule_from_config(cfg.optim, cfg.train.max_iters)
        self._data_state = data_state
        self.model = self._wrap(self.raw_model)

    # ---- setup ----

    def _build_model(self) -> None:
        from mmengine.checkpoint import build_model, model_from_checkpoint

        cfg = self.cfg
        torch.manual_seed(_seed_for(cfg.run.seed, 0, 0, 0))  # identical init on every rank
        if self.ckpt is None:
            self.gptconf = gpt_config(cfg, self.mode, self.meta, transfer=True)
            model = build_model(self.gptconf)  # transfer + initial freeze happen here
        else:
            # the checkpoint already holds the transferred trunk: the transfer source is never re-read
            model = model_from_checkpoint(self.ckpt, source=str(self.out_dir / "ckpt.pt"))
            self.mode.check_model(model, str(self.out_dir / "ckpt.pt"))
            self.gptconf = model.config
            if self.ckpt.get("trainer", {}).get("frozen"):
                model.freeze_transformer_weights()
        model.to(self.device)
        self.raw_model = model
        o = cfg.optim
        self.optimizer = model.configure_optimizers(o.weight_decay, o.learning_rate, (o.beta1, o.beta2), self.device_type)

    def _restore(self, ckpt: dict) -> dict | None:
        """Optimizer, counters, curriculum, freeze switch and this rank's data position."""
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.iter_num = int(ckpt.get("iter_num", 0))
        best = ckpt.get("best_val_loss")
        self.best_val_loss = math.inf if best is None else float(best)
        st = ckpt.get("trainer", {})
        self.unfrozen_at = st.get("unfrozen_at")
        self.rollbacks = int(st.get("rollbacks", 0))
        self.wandb_id = st.get("wandb_id")
        self.log_records = st.get("log_records")
        self.mode.load_state_dict(st.get("mode_state") or {})
        if self.scaler is not None and st.get("scaler"):
            self.scaler.load_state_dict(st["scaler"])
        states = st.get("data_state") or []
        if len(states) != self.info.world_size:
            logger.warning("the checkpoint was written by %d rank(s) and this run has %d, so the data order starts over "
                           "(model, optimizer and schedule continue)", len(states), self.info.world_size)
            return None
        return states[self.info.rank]

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

    def _frozen(self) -> bool:
        return self.raw_model.get_frozen_status()

    # ---- checkpoints ----

    def _trainer_state(self, data_states: list) -> dict:
        return {"frozen": self._frozen(), "unfrozen_at": self.unfrozen_at, "rollbacks": self.rollbacks,
                "mode_state": self.mode.state_dict(), "data_state": data_states,
                # metrics.jsonl records up to this checkpoint, so a resume drops the ones written after it
                "log_records": len(self.rlog.records) if self.rlog is not None else None,
                "wandb_id": self.rlog.wandb_id if self.rlog is not None else None,
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "data_meta": self.meta.to_dict(), "data_dir": str(self.data_path())}

    def data_path(self) -> Path:
        from mmengine.data.dataset import default_data_dir

        return Path(self.cfg.data.dir or default_data_dir())

    def save(self, stream: BatchStream, name: str = "ckpt.pt") -> Path | None:
        """All ranks call this (their data positions are gathered); rank 0 writes."""
        from mmengine.checkpoint import save_checkpoint

        states = D.gather_objects(stream.state_dict(), self.info)
        path = self.out_dir / name
        if self.main:
            save_checkpoint(path, self.raw_model, self.optimizer, iter_num=self.iter_num,
                            best_val_loss=None if math.isinf(self.best_val_loss) else self.best_val_loss,
                            config=to_dict(self.cfg), trainer=self._trainer_state(states))
        D.barrier(self.info)
        return path

    # ---- evaluation ----

    def evaluate(self, val_batches) -> dict:
        was_training = self.raw_model.training
        metrics = self.mode.evaluate(self.raw_model, val_batches, self.autocast)
        self.raw_model.train(was_training)
        return metrics

    # ---- the loop ----

    def _unfreeze(self, it: int, stream_logger: RunLogger) -> None:
        self.raw_model.unfreeze_transformer_weights()
        mult = self.cfg.transfer.unfreeze_lr_multiplier
        self.unfrozen_at = it
        if self.info.enabled:
            # DDP registers only parameters that required grad when it was built
            self.model = self._wrap(self.raw_model)
        status = self.raw_model.print_parameter_status() if self.main else {}
        if self.main:
            logger.info("iter %d: trunk unfrozen; its learning rate is now the schedule's x %g", it, mult)
        stream_logger.log({"iter": it, "split": "train", "event": "unfreeze", "loss": None,
                           "lr": self.lr_of(it), "trunk_lr_multiplier": mult, **{f"params_{k}": v for k, v in status.items()}})

    def _apply_lr(self, it: int) -> float:
        """lr = schedule(it) x the group's lr_scale, set on every step, so the schedule never overwrites the
        trunk's unfreeze multiplier (its scale after the switch); returns the scheduled lr."""
        lr = self.lr_of(it)
        trunk_scale = self.cfg.transfer.unfreeze_lr_multiplier if self.unfrozen_at is not None else 1.0
        for g in self.optimizer.param_groups:
            g["lr_scale"] = trunk_scale if g.get("trunk") else 1.0
            g["lr"] = lr * g["lr_scale"]
        return lr

    def _rollback(self, it: int, loss: float) -> None:
        from mmengine.checkpoint import load_checkpoint

        path = self.out_dir / "ckpt.pt"
        if self.rollbacks >= self.cfg.run.max_rollbacks or not path.is_file():
            why = "no checkpoint to roll back to" if not path.is_file() else f"{self.rollbacks} roll-backs already"
            raise TrainingError(f"loss became {loss} at iteration {it} ({why}); lower optim.learning_rate or check the data.")
        ckpt = load_checkpoint(path, map_location=self.device)
        self.raw_model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.rollbacks += 1
        logger.warning("loss became %s at iteration %d: rolled back to the weights of iteration %d and skipping the batch",
                       loss, it, int(ckpt.get("iter_num", 0)))

    def forward_backward(self, it: int, stream: "BatchStream") -> float:
        """Forward and backward over the step's micro-batches; returns the step's loss (not yet applied)."""
        accum = self.cfg.train.gradient_accumulation_steps
        # dropout masks are a function of (seed, rank, step) too
        torch.manual_seed(_seed_for(self.cfg.run.seed, self.info.rank, it, STREAM_DROPOUT))
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

    def batch_stream(self) -> "BatchStream":
        """The training batches from the current (or resumed) position."""
        return BatchStream(self.mode, self.cfg, self.info, self._data_state, self.mode.batch_state())

    def run(self) -> TrainResult:
        cfg, info = self.cfg, self.info
        tcfg = cfg.train
        result = TrainResult(out_dir=self.out_dir, iter_num=self.iter_num)
        if self.main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            if self.ckpt is None and (self.out_dir / "ckpt.pt").exists():
                logger.warning("%s already holds a checkpoint of an earlier run; this new run replaces it at its first "
                               "evaluation (continue the earlier run with --run.init_from=resume, or pick another --run.out_dir)",
                               self.out_dir)
        rlog = self.rlog = RunLogger(self.out_dir, cfg.log, enabled=self.main, total=tcfg.max_iters, initial=self.iter_num,
                                     config_dict=to_dict(cfg), resume=self.ckpt is not None,
                                     keep_records=self.log_records, wandb_id=self.wandb_id)
        n_params = self.raw_model.get_num_params()
        if self.main:
            logger.info("mode: %s | data: %s (%d train tokens, vocab %d) | model: %.2fM parameters, %d layers, %d wide | device %s, %s%s",
                        self.mode.describe(), self.data_path(), len(self.data.tokens("train")), self.meta.vocab_size,
                        n_params / 1e6, self.gptconf.n_layer, self.gptconf.n_embd, self.device, self.dtype_name,
                        f", {info.world_size} ranks" if info.enabled else "")
            self.raw_model.print_parameter_status()
            if self.ckpt is not None:
                logger.info("resumed from %s at iteration %d", self.out_dir / "ckpt.pt", self.iter_num)
            self._warn_about_settings()
        # the rate of the dtype the matmuls run in (autocast), so MFU is not flattered by a slower baseline
        peak = _peak_flops(self.device, self.dtype_name)
        if self.main:
            logger.info("MFU below is relative to this machine's measured matmul rate: %.1f GFLOP/s (%s)", peak / 1e9, self.dtype_name)
        val_batches = [(g, to_device(b, self.device)) for g, b in self.mode.val_batches()]
        stream = self.batch_stream()
        accum = tcfg.gradient_accumulation_steps
        tokens_per_iter = accum * cfg.data.batch_size * cfg.data.block_size * info.world_size
        unfreeze_at = cfg.transfer.unfreeze_at_iteration
        t_log = time.perf_counter()
        iters_since_log = 0
        try:
            with _StopRequest() as stop:
                self.raw_model.train()
                while self.iter_num < tcfg.max_iters:
                    it = self.iter_num
                    if unfreeze_at >= 0 and it >= unfreeze_at and self.unfrozen_at is None and self._frozen():
                        self._unfreeze(it, rlog)
                    lr = self._apply_lr(it)
                    loss_val = self.forward_backward(it, stream)
                    # one collective per step: every rank sees a NaN or a stop request of any rank
                    non_finite, stop_requested = D.any_true([not math.isfinite(loss_val), stop.signal is not None], info)
                    if non_finite:
                        self.optimizer.zero_grad(set_to_none=True)
                        if cfg.run.nan_policy == "rollback":
                            self._rollback(it + 1, loss_val)
                            self.iter_num += 1
                            continue
                        raise TrainingError(f"loss became {loss_val if not math.isfinite(loss_val) else 'non-finite on another rank'} at iteration {it + 1}; lower optim.learning_rate, "
                                            "check the data, or set run.nan_policy='rollback'.")
                    self.optimizer_step()
                    self.iter_num += 1
                    iters_since_log += 1
                    if self.main:
                        result.train_losses[self.iter_num] = loss_val
                    rlog.progress(1, loss=f"{loss_val:.4f}")

                    if self.iter_num % tcfg.log_interval == 0 or self.iter_num == tcfg.max_iters:
                        dt = (time.perf_counter() - t_log) / max(1, iters_since_log)
                        tok_s = tokens_per_iter / dt
                        # a frozen trunk runs forward only (no backward below the head): 2N of the 6N FLOPs
                        flops = self.raw_model.flops_per_token() / (3 if self._frozen() else 1)
                        mfu = flops * tok_s / info.world_size / peak
                        rec = {"iter": self.iter_num, "split": "train", "loss": loss_val, "lr": lr,
                               "tokens_per_s": tok_s, "mfu": mfu, "ms_per_iter": dt * 1000}
                        rlog.log(rec)
                        if self.main:
                            logger.info("iter %5d | loss %.4f | lr %.2e | %6.0f tok/s | %4.1f ms/it | MFU %.1f%%",
                                        self.iter_num, loss_val, lr, tok_s, dt * 1000, 100 * mfu)
                        t_log = time.perf_counter()
                        iters_since_log = 0

                    if self.iter_num % tcfg.eval_interval == 0 or self.iter_num == tcfg.max_iters:
                        stream = self._eval_and_save(val_batches, stream, rlog, result, lr)
                        t_log = time.perf_counter()
                        iters_since_log = 0

                    if stop_requested:
                        name = signal.Signals(stop.signal).name if stop.signal else "a signal on another rank"
                        path = self.save(stream)
                        if self.main:
                            logger.info("stopped by %s at iteration %d; checkpoint saved to %s (continue with --run.init_from=resume)",
                                        name, self.iter_num, path)
                        result.interrupted = True
                        break
        finally:
            stream.close()
            rlog.plot()
            rlog.close()
        result.iter_num = self.iter_num
        result.best_val_loss = None if math.isinf(self.best_val_loss) else self.best_val_loss
        result.checkpoint = self.out_dir / "ckpt.pt"
        if self.main:
            result.val = [r for r in rlog.records if r.get("split") == "val"]
        return result

    def _warn_about_settings(self) -> None:
        """Settings that are valid but will not do what they seem to (rank 0 only)."""
        cfg = self.cfg
        ignored = ignored_settings(cfg)
        if ignored:
            logger.warning("train.training_type='%s' does not read %s; they are ignored", cfg.train.training_type, ", ".join(ignored))
        at = cfg.transfer.unfreeze_at_iteration
        if at >= cfg.train.max_iters and self._frozen():
            logger.warning("transfer.unfreeze_at_iteration=%d is not before train.max_iters=%d, so the trunk stays frozen", at, cfg.train.max_iters)
        if self.ckpt is not None and self.ckpt.get("config"):
            # a resume runs with the config given now; say where it differs from the one the run started with
            # (not the settings a resume may well change: how long, how often to report, how fast)
            free = ("run.init_from", "run.compile", "train.max_iters", "train.eval_interval", "train.log_interval",
                    "data.prefetch_depth", "log.")
            saved = _flat(self.ckpt["config"])
            changed = [k for k, v in _flat(to_dict(cfg)).items() if not k.startswith(free) and saved.get(k, v) != v]
            if changed:
                logger.warning("resuming with settings that differ from the checkpoint's: %s", ", ".join(changed))

    def _eval_and_save(self, val_batches, stream: BatchStream, rlog: RunLogger, result: TrainResult, lr: float) -> BatchStream:
        metrics = self.evaluate(val_batches)
        event = None
        if self.main:
            event = self.mode.observe_eval(metrics)
        # rank 0 decides; every rank adopts its curriculum state and its figures (GPU kernels may differ in the
        # last bit between ranks, and a rank that alone thought the loss improved would wait in best.pt's save)
        mode_state, event, metrics = D.broadcast_object((self.mode.state_dict(), event, metrics), self.info)
        self.mode.load_state_dict(mode_state)
        rec = {"iter": self.iter_num, "split": "val", **metrics, "lr": lr}
        if event:
            rec.update(event[0])
        rlog.log(rec)
        improved = metrics["loss"] < self.best_val_loss
        if improved:
            self.best_val_loss = metrics["loss"]
        if self.main:
            extra = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()
                              if k != "loss" and isinstance(v, float))
            logger.info("iter %5d | val loss %.4f%s%s", self.iter_num, metrics["loss"], f" | {extra}" if extra else "",
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
        rlog.plot()
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
    """Run training for a validated config; returns losses, checkpoint path and the sample."""
    trainer = Trainer(cfg)
    try:
        result = trainer.run()
        if trainer.main and not result.interrupted and trainer.mode.generates_text and cfg.log.sample_tokens > 0:
            from mmengine.sample import sample_text

            result.sample = sample_text(trainer.raw_model, trainer.meta, trainer.data.tokenizer,
                                        length=cfg.log.sample_tokens, steps=max(1, cfg.log.sample_steps),
                                        temperature=cfg.log.sample_temperature, order=cfg.log.sample_order,
                                        seed=cfg.run.seed)
        return result
    finally:
        trainer.close()
        D.cleanup(trainer.info)


def _main(argv: list[str]) -> int:
    # under torchrun only rank 0 talks; the others report warnings and errors
    setup_console_logging(logging.INFO if int(os.environ.get("RANK", "0")) == 0 else logging.WARNING)
    cfg = load_config(argv)
    t0 = time.perf_counter()
    try:
        result = train(cfg)
    except TrainingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if result.sample is not None:
        print("\n--- sample (iterative unmasking) ---")
        print(result.sample)
        print("------------------------------------")
    if result.checkpoint is not None and int(os.environ.get("RANK", "0")) == 0:
        print(f"checkpoint: {result.checkpoint} ({result.iter_num} iterations, {time.perf_counter() - t0:.0f} s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m mmengine.train``; user mistakes -> one line on stderr, exit code 2."""
    from mmengine.checkpoint import CheckpointError

    def run(args):
        try:
            return _main(args)
        except CheckpointError as e:
            raise UserError(str(e)) from None

    return cli_entry(run, argv, "python -m mmengine.train")


if __name__ == "__main__":
    sys.exit(main())

"""``python -m mmengine.evaluate CKPT [--table.key=value ...]``: validation metrics of a checkpoint.

The run's config is read from the checkpoint; overrides change it (e.g. ``--data.dir=other_data``
or ``--train.eval_iters=50``). The fixed validation set and the metrics are those of the training
mode (:mod:`mmengine.modes`); the result is printed as one JSON object.
"""
from __future__ import annotations

import json
import logging
import sys

from mmengine.config import (
    Config,
    ConfigError,
    apply_dict,
    apply_overrides,
    cli_entry,
    parse_args,
    validate,
)
from mmengine.modes import get_spec

logger = logging.getLogger(__name__)


def evaluate_checkpoint(path: str, overrides: list[str] | None = None, device: str | None = None) -> dict:
    """Metrics of the checkpoint at ``path`` on its validation set (``device``: default ``run.device``, e.g. 'auto')."""
    from mmengine.checkpoint import (
        CheckpointError,
        check_run_state,
        load_checkpoint,
        model_from_checkpoint,
        upgrade_trainer_state,
    )
    from mmengine.data.stream import check_mode_data, open_data, to_device
    from mmengine.distributed import pick_device
    from mmengine.modes import build_mode
    from mmengine.upstream import ready_for_data
    from mmengine.upstream_run import is_foreign, run_settings

    ckpt = load_checkpoint(path)
    check_run_state(ckpt, str(path))
    cfg = Config()
    saved = ckpt.get("config") or {}
    if is_foreign(ckpt):
        # the earlier trainer's or nanoGPT's stored config is not ours: the model says what it is
        implied = run_settings(ckpt, str(path))
        apply_dict(cfg, _tables(implied), f"the model of {path}")
        logger.warning("%s was written by another trainer; its stored config is ignored and the model decides %s "
                       "(change any with --table.key=value)", path, ", ".join(f"{k}={v!r}" for k, v in implied))
    elif saved:
        try:
            apply_dict(cfg, saved, f"config stored in {path}")
        except ConfigError as e:
            # e.g. a nanoGPT checkpoint's flat config: its own settings, not ours
            logger.warning("%s; it is ignored (defaults and the command line decide)", str(e).rstrip("."))
            cfg = Config()
    cfg.run.init_from = "scratch"
    cfg.transfer = type(cfg.transfer)()  # the weights are in the checkpoint; transfer is history
    path_arg, pairs = parse_args(overrides or [])
    if path_arg is not None:
        raise ConfigError(f"unexpected argument '{path_arg}'; the config comes from the checkpoint, change it with --table.key=value.")
    apply_overrides(cfg, pairs)
    validate(cfg)
    get_spec(cfg.train.training_type).resolve_config(cfg)
    device = device or pick_device(cfg.run.device)
    # the data first: a foreign vocabulary is mapped onto the data dir's, a data dir of another vocabulary is
    # refused before the model is even built
    data = open_data(cfg)
    cls_id = cfg.transfer.cls_token_id if cfg.transfer.cls_token_id >= 0 else None
    ckpt = ready_for_data(ckpt, data, f"cannot evaluate {path}", cls_token_id=cls_id, source=str(path))
    mode = build_mode(cfg, data)
    check_mode_data(mode, cfg)
    model = model_from_checkpoint(ckpt, source=str(path)).to(device)
    mode.check_model(model, str(path))
    try:
        mode.load_state_dict(upgrade_trainer_state(ckpt.get("trainer")).get("mode") or {})
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"checkpoint {path}: its stored {mode.describe()} state cannot be read ({e})") from None
    metrics = mode.evaluate(model, [(g, to_device(b, device)) for g, b in mode.val_batches()])
    metrics["iter"] = int(ckpt.get("iter_num", 0))
    return metrics


def _tables(pairs) -> dict:
    """[("table.key", value)] -> {table: {key: value}}."""
    out: dict = {}
    for dotted, value in pairs:
        table, _, key = dotted.partition(".")
        out.setdefault(table, {})[key] = value
    return out


def main(argv: list[str] | None = None) -> int:
    def run(args):
        if not args or args[0].startswith("--"):
            raise ConfigError("give the checkpoint to evaluate: python -m mmengine.evaluate CKPT [--table.key=value ...].")
        print(json.dumps(evaluate_checkpoint(args[0], args[1:]), indent=1))
        return 0

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    return cli_entry(run, argv, "python -m mmengine.evaluate CKPT")


if __name__ == "__main__":
    sys.exit(main())

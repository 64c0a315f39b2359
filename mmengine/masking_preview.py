"""``python -m mmengine.masking_preview CONFIG [--stage N] [--table.key=value ...]``: what a run's masks look like.

For each masking stage of the run (its training stages, then its validation stages when it has its own;
with ``--stage N`` the training stage N only, counted from 0 as in ``loss_stage0``), windows of real text
from the data dir's validation split are masked as the run masks them: a few are printed with the masked
characters marked (reverse video on a terminal; on other outputs a line of ``^`` under them), and the
masked share per row is summarised over many rows (mean, min, max, standard deviation), with the number
of masked runs per row and their mean length, the figures that tell sticky and span settings apart. The
earlier research trainer had a masking simulator for choosing stage parameters; this is its successor.
Nothing is trained or written.
"""
from __future__ import annotations

import sys

import numpy as np

from mmengine.config import ConfigError, UserError, help_text, load_config
from mmengine.errors import cli_entry
from mmengine.modes import get_spec

__all__ = ["main", "mask_statistics", "render_row"]

_USAGE = """usage: python -m mmengine.masking_preview CONFIG.toml [--stage N] [--rows 512] [--show 4] [--seed 0]
                                        [--style auto|ansi|plain] [--table.key=value ...]

Masks windows of the data dir's validation text with each masking stage of the run and prints a few of them
with the masked characters marked, plus the masked share per row (mean, min, max, std) and the masked runs
per row over --rows rows. --stage N: training stage N only (from 0). --style: reverse video ('ansi'), a line
of ^ under the masked characters ('plain'), or 'auto' (ansi on a terminal). Other --table.key=value flags
change the config as for python -m mmengine.train."""

_OWN = {"stage": int, "rows": int, "show": int, "seed": int, "style": str}
_SHOWN = {"\n": "\u21b5", "\r": "\u240d", "\t": "\u2192"}  # a newline must not break the marked line


def _split_args(args: list[str]) -> tuple[dict, list[str]]:
    """(this command's own flags, the rest for the config)."""
    own: dict = {}
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        key, eq, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if key in _OWN:
            if not eq:
                if i + 1 >= len(args):
                    raise ConfigError(f"--{key} needs a value.")
                value, i = args[i + 1], i + 1
            try:
                own[key] = _OWN[key](value)
            except ValueError:
                raise ConfigError(f"--{key} must be {'an integer' if _OWN[key] is int else 'text'}, "
                                  f"got {value!r}.") from None
        else:
            rest.append(arg)
        i += 1
    return own, rest


def mask_statistics(mask: np.ndarray) -> dict:
    """Masked share per row (mean, min, max, std), masked runs per row and their mean length, of a (B, T) bool mask."""
    mask = np.asarray(mask, dtype=bool)
    share = mask.mean(axis=1)
    starts = mask & ~np.concatenate([np.zeros((len(mask), 1), dtype=bool), mask[:, :-1]], axis=1)  # a run begins
    runs = starts.sum(axis=1)
    return {"mean": float(share.mean()), "min": float(share.min()), "max": float(share.max()),
            "std": float(share.std()), "runs_per_row": float(runs.mean()),
            "mean_run": float(mask.sum() / max(int(runs.sum()), 1))}


def render_row(pieces: list[str], masked: np.ndarray, style: str) -> str:
    """One window: each token's text (control characters shown as symbols), masked tokens marked."""
    pieces = ["".join(_SHOWN.get(c, c) for c in p) for p in pieces]
    if style == "ansi":
        out, inside = [], False
        for p, m in zip(pieces, masked):
            if m != inside:  # one reverse-video stretch per masked run
                out.append("\x1b[7m" if m else "\x1b[0m")
                inside = bool(m)
            out.append(p)
        return "".join(out) + ("\x1b[0m" if inside else "")
    text = "".join(pieces)
    marks = "".join(("^" if m else " ") * len(p) for p, m in zip(pieces, masked))
    return f"{text}\n{marks.rstrip()}"


def _pieces(tokenizer, ids: np.ndarray) -> list[str]:
    if tokenizer is None:
        return [f"<{int(i)}>" for i in ids]
    return [tokenizer.decode([int(i)]) for i in ids]


def _describe(stage) -> str:
    d = stage.to_dict()
    keep = {"random": ("max_masked_ratio",), "sticky": ("target_masked_ratio", "p1", "p2"),
            "span": ("spans_count",) if stage.spans_count else ("target_masked_ratio", "span_length")}[stage.type]
    fields = ", ".join(f"{k}={d[k]}" for k in keep)
    return f"{stage.type} ({fields})"


def preview(cfg, *, stage: int | None = None, rows: int = 512, show: int = 4, seed: int = 0,
            style: str = "plain") -> str:
    """The text :func:`main` prints for a loaded config."""
    from mmengine.data.masking import make_mask
    from mmengine.data.stream import open_data

    groups = getattr(get_spec(cfg.train.training_type), "masking_stages", lambda c: [])(cfg)
    if not groups:
        raise UserError(f"this run (train.training_type='{cfg.train.training_type}') masks with no stages, so there is "
                        "nothing to preview.")
    numbered = [(role, list(enumerate(stages))) for role, stages in groups]
    if stage is not None:
        role, stages = numbered[0]
        if not 0 <= stage < len(stages):
            plural = "s" if len(stages) != 1 else ""
            raise ConfigError(f"--stage must be between 0 and {len(stages) - 1} "
                              f"(the run has {len(stages)} {role}{plural}), got {stage}.")
        numbered = [(role, [stages[stage]])]
    data = open_data(cfg)
    tokens = data.tokens("val")
    T = cfg.data.block_size
    if len(tokens) < T:
        raise UserError(f"the validation split has {len(tokens)} tokens, fewer than one window of data.block_size={T}.")
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(tokens) - T + 1, size=rows)
    x = np.asarray(tokens[starts[:, None] + np.arange(T)], dtype=np.int64)  # (rows, T)
    out = [f"data: {data.path} (validation split), windows of {T} tokens, {rows} rows per stage"]
    for g, (role, stages) in enumerate(numbered):
        for number, st in stages:
            mask = make_mask(st, x.shape, np.random.default_rng([seed, g, number]))
            s = mask_statistics(mask)
            out += ["", f"{role} {number}: {_describe(st)}",
                    (f"  masked share per row: mean {s['mean']:.3f}, min {s['min']:.3f}, max {s['max']:.3f}, "
                     f"std {s['std']:.3f}; masked runs per row {s['runs_per_row']:.1f}, "
                     f"mean run {s['mean_run']:.1f} tokens")]
            for r in range(min(show, rows)):
                out.append(render_row(_pieces(data.tokenizer, x[r]), mask[r], style))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    def run(args: list[str]) -> int:
        own, rest = _split_args(args)
        if not rest or rest[0].startswith("--"):
            raise ConfigError("give the run's config: python -m mmengine.masking_preview CONFIG.toml [--stage N].")
        style = own.get("style", "auto")
        if style not in ("auto", "ansi", "plain"):
            raise ConfigError(f"--style must be 'auto', 'ansi' or 'plain', got {style!r}.")
        if style == "auto":
            style = "ansi" if sys.stdout.isatty() else "plain"
        for key in ("rows", "show"):
            if own.get(key, 1) < 1:
                raise ConfigError(f"--{key} must be at least 1, got {own[key]}.")
        cfg = load_config(rest, check_paths=False)  # the preview needs only the data dir, opened below
        print(preview(cfg, stage=own.get("stage"), rows=own.get("rows", 512), show=own.get("show", 4),
                      seed=own.get("seed", 0), style=style))
        return 0

    prog = "python -m mmengine.masking_preview"
    return cli_entry(run, argv, prog, help_text=lambda: _USAGE + "\n\n" + help_text(prog + " CONFIG.toml"))


if __name__ == "__main__":
    sys.exit(main())

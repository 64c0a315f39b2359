"""Generation from a language model (the library half of ``python -m mmengine.sample``).

A chunk of ``[MASK]`` tokens is appended to the context; at each of ``steps`` steps the model
predicts every masked position, a token is sampled for each, and some of them are revealed (random
positions, the MDLM ancestral sampler, or the most confident ones; a linear schedule: after step s,
s/steps of the chunk is revealed), the rest stay masked.
Texts longer than the context are made chunk by chunk, each conditioned on the last half window.
A causal model is sampled autoregressively instead.
"""
from __future__ import annotations

from pathlib import Path

import torch

from mmengine.rng import STREAM_SAMPLE


@torch.no_grad()
def generate(model, *, length: int, mask_id: int, text_vocab_size: int, steps: int = 32, temperature: float = 1.0,
             prompt: list[int] | None = None, generator: torch.Generator | None = None,
             order: str = "confidence") -> list[int]:
    """``length`` new token ids after ``prompt``; only text tokens (no specials) are ever produced.

    ``order`` picks which masked positions are revealed at each step: the model's most confident
    predictions ("confidence"), or uniformly random ones ("random", the MDLM ancestral sampler).
    """
    if length < 0 or steps < 1:
        raise ValueError("length must be >= 0 and steps >= 1")
    if order not in ("confidence", "random"):
        raise ValueError(f"order must be 'confidence' or 'random', got {order!r}")
    model.eval()
    device = next(model.parameters()).device
    block = model.config.block_size
    causal = model.config.attention_type == "causal"
    seq = list(prompt or [])
    target = len(seq) + length

    def sample_from(logits):  # (N, V) -> ids (N,), their probabilities (N,)
        logits = logits.float()[:, :text_vocab_size] / max(temperature, 1e-6)
        probs = torch.softmax(logits, dim=-1)
        ids = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        return ids, probs.gather(-1, ids[:, None]).squeeze(-1)

    while len(seq) < target:
        if causal:
            ctx = torch.tensor([seq[-(block - 1):] or [mask_id]], device=device)
            logits, _ = model(ctx)
            ids, _ = sample_from(logits[:, -1, :])
            seq.append(int(ids[0]))
            continue
        keep = seq[-(block // 2):] if seq else []
        new = min(block - len(keep), target - len(seq))
        x = torch.tensor([keep + [mask_id] * new], device=device)  # (1, len(keep) + new)
        masked = torch.zeros(x.shape[1], dtype=torch.bool, device=device)
        masked[len(keep):] = True
        for s in range(steps):
            logits, _ = model(x)  # (1, T, V)
            pos = masked.nonzero().squeeze(-1)
            if len(pos) == 0:
                break
            ids, conf = sample_from(logits[0, pos])
            # reveal the chosen predictions so that (s+1)/steps of the chunk is known
            n_reveal = len(pos) if s == steps - 1 else max(0, round(new * (s + 1) / steps) - (new - len(pos)))
            if n_reveal == 0:
                continue
            if order == "random":
                conf = torch.rand(len(pos), generator=generator, device=device)
            top = conf.topk(min(n_reveal, len(pos))).indices
            x[0, pos[top]] = ids[top]
            masked[pos[top]] = False
        seq.extend(x[0, len(keep):].tolist())
    return seq[len(prompt or []):target]


def sample_text(model, meta, tokenizer, *, length: int = 200, steps: int = 32, seed: int = 0,
                temperature: float = 1.0, prompt: str = "", order: str = "confidence") -> str:
    """Decoded text of :func:`generate` (prompt included)."""
    if tokenizer is None:
        raise ValueError("the data dir has no tokenizer, so generated ids cannot be decoded")
    g = torch.Generator(device=next(model.parameters()).device)
    g.manual_seed(seed * 1000 + STREAM_SAMPLE)
    prompt_ids = list(tokenizer.encode(prompt)) if prompt else []
    ids = generate(model, length=length, mask_id=meta.mask_id, text_vocab_size=meta.text_vocab_size, steps=steps,
                   temperature=temperature, prompt=prompt_ids, generator=g, order=order)
    return tokenizer.decode(prompt_ids + ids)


def load_for_sampling(ckpt_path: str | Path, data_dir: str | None = None):
    """(model, meta, tokenizer) from a trainer checkpoint (its data meta is stored inside)."""
    from mmengine.checkpoint import load_checkpoint, model_from_checkpoint
    from mmengine.data.dataset import DataDir, DataMeta
    from mmengine.data.tokenizer import load_tokenizer

    ckpt = load_checkpoint(ckpt_path)
    model = model_from_checkpoint(ckpt, source=str(ckpt_path))
    trainer = ckpt.get("trainer") or {}
    if data_dir:
        data = DataDir.open(data_dir)
        return model, data.meta, data.tokenizer
    if "data_meta" not in trainer:
        raise ValueError(f"{ckpt_path} holds no data description; pass --data-dir with the data it was trained on")
    meta = DataMeta.from_dict(trainer["data_meta"])
    tok_cfg = trainer["data_meta"].get("tokenizer_config") or {}
    tokenizer = load_tokenizer(tok_cfg, Path(trainer.get("data_dir", "."))) if tok_cfg else None
    return model, meta, tokenizer

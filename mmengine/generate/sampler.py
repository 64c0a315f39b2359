"""The batched sampler: every sample of a call advances together, one LM forward per step.

**Layout.** A sample is a row of ``N`` ids: the prompt (or an infill template's given ids) and
*free* positions, which start as ``[MASK]`` and are the only ones ever written. Free positions are
made left to right in *blocks* (``block_length``; 0 = as much as the context holds). Block
``[g0, g1)`` is made inside the window ``[max(0, g1 - W), ...)`` of ``W = min(block_size, N)`` ids,
so later free positions inside the window are seen as [MASK] (LLaDA's semi-autoregressive
blocks) and a text longer than the context continues on the last part of the window. With
``block_length = 0`` the first block fills the first window and each later one adds ``W - W // 2``
tokens after the last ``W // 2``.

**A step** (``steps`` per block; ``n`` free positions in the block):

1. one LM forward on the window; every masked position of the block gets a token
   (:func:`mmengine.generate.choice.choose_tokens`), so the block is complete;
2. unless it is the block's last step, ``m_i = round(r_i * n)`` of its free positions are masked
   again (:mod:`mmengine.generate.schedule`); *which* ones is the remasking strategy, by a score:

   - ``random`` (MDLM ancestral): uniformly random among the positions filled in this step; tokens
     kept from earlier steps are masked again only when the schedule asks for more masks than the
     step filled (a rising custom schedule);
   - ``low_confidence`` (LLaDA): the lowest P_LM(token) among the positions filled in this step (read
     from the same forward), with the same rule for older tokens;
   - ``self_surprise``: the highest 1 - P_LM(token | rest) over *all* free positions of the block,
     from one extra LM forward on the completed block in which every other free position is masked
     (the parity alternates between steps). A masked-diffusion LM is trained on masked positions
     only, so its prediction at a visible token is weak evidence: on the quickstart LM (1000 iters)
     P(token) at visible positions separates randomly replaced characters from real ones with an AUC
     of 0.75, at masked ones 0.91, this mix 0.83;
   - ``inspector``: the highest ``randomness * U(0,1) + (1 - randomness) * P(wrong)`` over all free
     positions, P(wrong) = 1 - P(class 0) of the inspector on the window up to the block's end;
   - ``threshold``: every free position with P(wrong) > ``threshold``, whatever the schedule; a
     sample with nothing left masked is finished (checked every ``check_every`` steps, one host
     sync each; ``Sample.steps`` counts the steps in which a sample still had masked tokens);
   - ``mixed``: the positions with P(wrong) > ``threshold``, most wrong first, fill up to
     ``floor((1 - min_random) * m_i)`` of the count; the rest is uniformly random.

   So a revealed token can be masked again and rewritten (self_surprise, inspector, threshold,
   mixed, rising custom schedules). Prompt and given template ids never change.

No per-sample Python loop and no host synchronisation inside the step loop (counts come from the
schedule on the host; ``threshold`` syncs every ``check_every`` steps; top-p on a *CPU* reads one
flag per step, see :func:`mmengine.generate.choice.nucleus_sample`). Every row of a block has the
same masked count under a schedule, so the masked positions are carried as (rows, count) indices
and only they go through the token choice. Randomness comes from one ``torch.Generator`` seeded
with ``cfg.seed``, so a call is reproducible on the same device. On CUDA the forwards run under
bfloat16 autocast.

A causal LM generates left to right instead, one forward per token on the last ``block_size``
ids, with the same token-choice settings; without a prompt it starts from the newline id.

Every sample gets ``self_confidence``: the mean over its generated positions of log P_LM(token |
rest). Because visible positions say little (above), it takes 2 forwards per window, each masking
every other generated position (on the quickstart LM: real vs 20%-corrupted windows ranked with AUC
0.998, against 0.969 for one unmasked forward; 4 passes: 0.999). For a causal LM it is the mean
next-token log P (one forward per window).
"""
from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

from mmengine.errors import UserError
from mmengine.generate import remasking
from mmengine.generate.choice import choose_tokens, recent_hits, repetition_hits
from mmengine.generate.config import INSPECTOR_STRATEGIES, SampleConfig
from mmengine.generate.schedule import masked_counts, masked_fractions
from mmengine.generate.vocab import SamplerVocab
from mmengine.generate.windows import tile_starts

#: Forwards per window for self_confidence; pass k masks the generated positions j with j % CONFIDENCE_PASSES == k
#: (real vs corrupted text on the quickstart LM: AUC 0.998 with 2 passes, 0.999 with 4 or 8, 0.969 with one plain
#: forward; 2 keeps the cost at 2 forwards per call).
CONFIDENCE_PASSES = 2


@dataclass
class Sample:
    """One generated text.

    Fields:
        ids: the whole text: prompt + generated ids, or the filled template (a causal model's
            starting newline is not included).
        self_confidence: mean log P_LM(token | rest) over the generated positions (see module doc).
        judge_score: the judge's score of ``ids`` (None without a judge).
        steps: LM steps this sample was still being written in (causal: tokens generated).
        seconds: wall time of the whole call that made it (all samples of a call are made together).
    """

    ids: list[int]
    self_confidence: float
    judge_score: float | None
    steps: int
    seconds: float


def resolve_device(cfg_device: str, device=None) -> torch.device:
    """``device`` if given, else ``cfg.device``; 'auto' = CUDA when there is one."""
    name = device if device is not None else cfg_device
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(name).startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {name!r} was asked for but CUDA is not available")
    return torch.device(name)


def plan_blocks(free: np.ndarray, width: int, block_length: int) -> list[tuple[int, int]]:
    """The blocks [g0, g1) that hold free positions, left to right (see the module doc)."""
    n = len(free)
    idx = np.flatnonzero(free)
    if idx.size == 0:
        return []
    start = int(idx[0])
    if block_length > 0:
        ends = list(range(start + block_length, n, block_length)) + [n]
    else:
        step = width - width // 2
        first = min(n, max(width, start + step))
        ends = list(range(first, n, step)) + [n]
    blocks, lo = [], start
    for hi in dict.fromkeys(ends):  # ordered, without repeats
        if hi > lo and free[lo:hi].any():
            blocks.append((lo, hi))
        lo = max(lo, hi)
    return blocks


def _autocast(device: torch.device):
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _progress_bar(total: int, show: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="sampling", unit="step", disable=not show, file=sys.stderr, leave=False)


class _Block:
    """Block [g0, g1) of the rows ``x`` (R, N) and its window [w0, w0 + W); ``window`` and ``tokens`` are views
    of ``x``, so writing them writes ``x``."""

    def __init__(self, x, w0, W, g0, g1, free: np.ndarray, device):
        self.x, self.w0, self.g0, self.g1 = x, w0, g0, g1
        self.a, self.b, self.L = g0 - w0, g1 - w0, g1 - g0
        self.window = x[:, w0:w0 + W]  # (R, W)
        self.tokens = x[:, g0:g1]  # (R, L)
        self.free = torch.from_numpy(free).to(device)  # (L,)
        self.free_index = torch.from_numpy(np.flatnonzero(free)).to(device)  # (n,)
        self.n = int(free.sum())


class _Run:
    """One batched generation: the rows, the models, the settings and the random stream."""

    def __init__(self, lm, cfg: SampleConfig, vocab: SamplerVocab, inspector, device: torch.device):
        self.lm = lm
        self.cfg = cfg
        self.vocab = vocab
        self.inspector = inspector
        self.device = device
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(cfg.seed)

    def choose(self, logits, x, positions):
        """Tokens for ``positions`` (a slice or (R, K) indices) of window ``x`` (R, T): (ids, log P_LM)."""
        cfg = self.cfg
        hits = None
        if cfg.repetition_penalty != 1.0 and cfg.repetition_window > 0:
            hits = repetition_hits(x, x != self.vocab.mask_id, cfg.repetition_window, logits.shape[-1], positions)
        return choose_tokens(logits, text_vocab_size=self.vocab.text_vocab_size, temperature=cfg.temperature,
                             top_k=cfg.top_k, top_p=cfg.top_p, repetition_penalty=cfg.repetition_penalty,
                             repeat_hits=hits, generator=self.generator)

    def rand(self, shape):
        return torch.rand(shape, generator=self.generator, device=self.device)

    # --- diffusion ---------------------------------------------------------------

    def diffuse(self, x: torch.Tensor, free: np.ndarray, show_progress: bool) -> torch.Tensor:
        """Fills the free positions of ``x`` (R, N) in place; returns the steps each row ran (R,)."""
        cfg = self.cfg
        R, N = x.shape
        W = min(self.lm.config.block_size, N)
        blocks = plan_blocks(free, W, cfg.block_length)
        fractions = masked_fractions(cfg.schedule, cfg.steps, start_ratio=cfg.start_ratio, end_ratio=cfg.end_ratio,
                                     custom=cfg.custom_schedule)
        steps_run = torch.zeros(R, dtype=torch.long, device=self.device)
        with _progress_bar(len(blocks) * cfg.steps, show_progress) as bar:
            for g0, g1 in blocks:
                block = _Block(x, max(0, g1 - W), W, g0, g1, free[g0:g1], self.device)
                if cfg.remasking == "threshold":
                    steps_run += self._threshold_block(block, bar)
                else:
                    steps_run += self._counted_block(block, masked_counts(fractions, block.n), bar)
        return steps_run

    def _counted_block(self, block: _Block, counts: list[int], bar) -> int:
        """A block whose masked count after each step comes from the schedule: every row has the same
        count, so the masked positions are carried as (R, k) indices and only they are predicted."""
        cfg = self.cfg
        R = block.x.shape[0]
        positions = block.free_index.expand(R, -1)  # (R, n): all free positions start masked
        steps = 0
        for i in range(cfg.steps):
            last = i + 1 == cfg.steps
            m = 0 if last else counts[i]
            if positions.shape[1] == 0 and m == 0:
                bar.update(1)  # nothing masked and nothing to mask: a block shorter than the steps
                continue
            steps += positions.shape[1] > 0
            logits, _ = self.lm(block.window)
            logits = logits[:, block.a:block.b]  # (R, L, V)
            new = torch.zeros(R, block.L, dtype=torch.bool, device=self.device)
            log_p = None
            if positions.shape[1] > 0:
                V = logits.shape[-1]
                ids, log_p = self.choose(logits.gather(1, positions.unsqueeze(-1).expand(-1, -1, V)), block.window,
                                         positions + block.a)
                block.tokens.scatter_(1, positions, ids)
                new.scatter_(1, positions, True)
            if not last:
                positions = self._remask(block, positions, new, log_p, logits, i, m)
                block.tokens.scatter_(1, positions, self.vocab.mask_id)
            bar.update(1)
        return steps

    def _remask(self, block: _Block, positions, new, log_p, logits, i, m):
        """(R, m) indices of the block positions masked for the next step (see :mod:`mmengine.generate.remasking`)."""
        cfg, strategy = self.cfg, self.cfg.remasking
        R, L = new.shape
        free = block.free.expand(R, L)
        if m == 0:
            return positions[:, :0]
        if strategy == "random":
            score = remasking.fresh_first(self.rand((R, L)), new)
        elif strategy == "low_confidence":
            p = torch.zeros(R, L, device=self.device)
            if m > positions.shape[1]:  # older tokens compete too: their P from this step's forward
                raw = logits[..., :self.vocab.text_vocab_size].float()
                p = torch.softmax(raw, dim=-1).gather(-1, block.tokens.unsqueeze(-1)).squeeze(-1)
            if log_p is not None:
                p = p.scatter(1, positions, log_p.exp())
            score = remasking.fresh_first(1.0 - p, new)
        elif strategy == "self_surprise":
            score = 1.0 - self._surprise_probs(block, i)
        elif strategy == "inspector":
            score = remasking.mix_inspector(self._p_wrong(block), self.rand((R, L)), cfg.randomness)
        elif strategy == "mixed":
            score = remasking.mixed_scores(self._p_wrong(block), self.rand((R, L)), free, m, cfg.threshold,
                                           cfg.min_random)
        else:  # SampleConfig.validate admits no other
            raise AssertionError(strategy)
        return remasking.top_m_indices(score, free, m)

    def _threshold_block(self, block: _Block, bar) -> torch.Tensor:
        """A block under ``threshold``: rows mask different numbers of positions, so the block is carried
        as an (R, L) mask and every position is predicted (only masked ones are written)."""
        cfg = self.cfg
        R = block.x.shape[0]
        masked = block.free.expand(R, -1).clone()
        steps = torch.zeros(R, dtype=torch.long, device=self.device)
        for i in range(cfg.steps):
            steps += masked.any(dim=-1)
            logits, _ = self.lm(block.window)
            ids, _ = self.choose(logits[:, block.a:block.b], block.window, slice(block.a, block.b))
            block.tokens.copy_(torch.where(masked, ids, block.tokens))
            bar.update(1)
            if i + 1 == cfg.steps:
                break
            masked = remasking.threshold_mask(self._p_wrong(block), block.free.expand(R, -1), cfg.threshold)
            block.tokens.masked_fill_(masked, self.vocab.mask_id)
            if (i + 1) % cfg.check_every == 0 and not bool(masked.any()):  # the one host sync: this strategy's decision
                bar.update(cfg.steps - i - 1)
                break
        return steps

    def _p_wrong(self, block: _Block):
        # the inspector reads the window up to the block's end: no [MASK] (it never saw one in training)
        return self.inspector.p_wrong(block.x[:, block.w0:block.g1])[:, block.a:]

    def _surprise_probs(self, block: _Block, i: int):
        """P_LM(token) at every block position from one extra forward in which every other free
        position (the parity alternating with the step) is masked."""
        window = block.window.clone()
        hide = block.free & (torch.arange(block.L, device=self.device) % 2 == i % 2)  # (L,)
        window[:, block.a:block.b].masked_fill_(hide, self.vocab.mask_id)
        logits, _ = self.lm(window)
        raw = logits[:, block.a:block.b].float()[..., :self.vocab.text_vocab_size]
        return torch.softmax(raw, dim=-1).gather(-1, block.tokens.unsqueeze(-1)).squeeze(-1)

    # --- causal --------------------------------------------------------------------

    def left_to_right(self, x: torch.Tensor, length: int, show_progress: bool) -> torch.Tensor:
        cfg = self.cfg
        C = self.lm.config.block_size
        with _progress_bar(length, show_progress) as bar:
            for _ in range(length):
                context = x[:, -C:]
                logits, _ = self.lm(context)  # (R, 1, V): the next token only
                hits = None
                if cfg.repetition_penalty != 1.0 and cfg.repetition_window > 0:
                    hits = recent_hits(context[:, -cfg.repetition_window:], logits.shape[-1])
                ids, _ = choose_tokens(logits[:, -1:], text_vocab_size=self.vocab.text_vocab_size,
                                       temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p,
                                       repetition_penalty=cfg.repetition_penalty, repeat_hits=hits,
                                       generator=self.generator)
                x = torch.cat([x, ids], dim=1)
                bar.update(1)
        return x


# -----------------------------------------------------------------------------
# self-confidence


@torch.no_grad()
def self_confidence(lm, x: torch.Tensor, generated: np.ndarray, mask_id: int | None,
                    text_vocab_size: int) -> torch.Tensor:
    """Mean log P_LM(token | rest) over the ``generated`` (N,) positions of each row of ``x`` (R, N); (R,) float.

    Bidirectional LM: :data:`CONFIDENCE_PASSES` forwards per window, pass k masking the generated
    positions j with j % CONFIDENCE_PASSES == k. Causal LM: next-token log P, one forward per window.
    NaN for a row with nothing generated.
    """
    R, N = x.shape
    C = lm.config.block_size
    device = x.device
    total = torch.zeros(R, N, device=device)
    count = torch.zeros(N, device=device)
    gen = torch.from_numpy(generated).to(device)
    if lm.config.attention_type == "causal":
        # logits at k predict k + 1: windows over the targets 1 .. N-1
        for s in tile_starts(N - 1, C):
            ctx = x[:, s:s + C][:, : N - 1 - s]
            logits = lm.lm_head(lm.encode(ctx))  # (R, t, V), every position
            lp = torch.log_softmax(logits.float()[..., :text_vocab_size], dim=-1)
            t = ctx.shape[1]
            got = lp.gather(-1, x[:, s + 1:s + 1 + t].unsqueeze(-1)).squeeze(-1)
            # a target already read keeps its value: the earlier window gave it more context
            fresh = count[s + 1:s + 1 + t] == 0
            total[:, s + 1:s + 1 + t] = torch.where(fresh, got, total[:, s + 1:s + 1 + t])
            count[s + 1:s + 1 + t] = 1
    else:
        for s in tile_starts(N, C):
            t = min(C, N - s)
            window_gen = gen[s:s + t]
            phase = torch.arange(s, s + t, device=device) % CONFIDENCE_PASSES
            for k in range(CONFIDENCE_PASSES):
                hide = window_gen & (phase == k)
                inp = torch.where(hide, torch.full_like(x[:, s:s + t], mask_id), x[:, s:s + t])
                logits, _ = lm(inp)
                lp = torch.log_softmax(logits.float()[..., :text_vocab_size], dim=-1)
                got = lp.gather(-1, x[:, s:s + t].unsqueeze(-1)).squeeze(-1)
                total[:, s:s + t] = torch.where(hide, got, total[:, s:s + t])
            count[s:s + t] = 1
    use = gen & (count > 0)
    n = use.sum()
    return torch.where(use, total, torch.zeros_like(total)).sum(dim=1) / n if n > 0 else torch.full((R,), float("nan"))


# -----------------------------------------------------------------------------
# the public call


def _check_lm(lm, vocab: SamplerVocab, cfg: SampleConfig) -> bool:
    """True for a causal LM; one sentence for a model the sampler cannot use."""
    config = lm.config
    if config.mode.value != "language_model":
        raise UserError(f"sampling needs a language model, got a {config.mode.value} model")
    if config.vocab_size < vocab.text_vocab_size:
        raise UserError(f"the language model's embedding has {config.vocab_size} rows, fewer than the "
                        f"{vocab.text_vocab_size} text tokens of the vocabulary")
    causal = config.attention_type == "causal"
    if not causal and (vocab.mask_id is None or vocab.mask_id >= config.vocab_size):
        raise UserError("the language model has no [MASK] embedding, which diffusion sampling needs")
    if not causal and cfg.block_length > config.block_size:
        raise UserError(f"sample.block_length ({cfg.block_length}) is longer than the language model's context "
                        f"({config.block_size})")
    return causal


def _check_ids(ids, vocab: SamplerVocab, what: str, allow_none: bool = False) -> None:
    for j, i in enumerate(ids):
        if i is None and allow_none:
            continue
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < vocab.text_vocab_size:
            raise UserError(f"{what}[{j}] is {i!r}, not a text id in [0, {vocab.text_vocab_size})")


def auto_remasking(have_inspector: bool) -> str:
    """What ``remasking = 'auto'`` means: 'mixed' with an inspector, else 'random'
    (measured best; benchmarks/QUALITY.md)."""
    return "mixed" if have_inspector else "random"


def generate(lm, cfg: SampleConfig, vocab: SamplerVocab, *, inspector=None, judge=None, prompt_ids=None, template=None,
             device=None, progress=None) -> list[Sample]:
    """``cfg.num_samples`` samples from ``lm`` (a :class:`mmengine.model.GPT` language model), made together.

    ``prompt_ids``: ids the samples continue (kept). ``template``: infilling, a list of ids with
    None at the positions to fill (given ids never change; ``cfg.length`` is not used). ``inspector``
    (:class:`~mmengine.generate.inspector.Inspector`) for the inspector strategies, ``judge``
    (:class:`~mmengine.generate.judge.Judge`) scores every sample and picks the best of
    ``cfg.best_of`` candidates per sample. The models are moved to the device (``device``, else
    ``cfg.device``) and run in eval mode; their train/eval mode is restored afterwards.
    ``progress``: True/False forces the progress bar; None shows it when ``cfg.progress`` is set
    and stderr is a terminal. ``cfg.prompt`` / ``cfg.infill`` are text: pass their ids here, or use
    :func:`mmengine.generate.sample_texts`.
    """
    cfg.validate(check_paths=False)
    if cfg.remasking == "auto":
        cfg = dataclasses.replace(cfg, remasking=auto_remasking(inspector is not None))
    causal = _check_lm(lm, vocab, cfg)
    if cfg.prompt and prompt_ids is None or cfg.infill and template is None:
        raise UserError("generate() takes ids: encode sample.prompt / sample.infill first (sample_texts does)")
    if prompt_ids is not None and template is not None:
        raise UserError("pass either prompt ids or an infill template, not both")
    if cfg.remasking in INSPECTOR_STRATEGIES and inspector is None and not causal:
        raise UserError(f"sample.remasking={cfg.remasking!r} needs an inspector (a token classifier)")
    if causal and inspector is not None:
        raise UserError("an inspector guides remasking, which a causal (left-to-right) model does not do")
    if causal and template is not None:
        raise UserError("infilling needs a bidirectional language model; this one is causal")
    if cfg.best_of > 1 and judge is None:
        raise UserError(f"sample.best_of={cfg.best_of} needs a judge to pick the best candidate")
    device = resolve_device(cfg.device, device)
    started = time.perf_counter()
    models = [m for m in (lm, getattr(inspector, "model", None), getattr(judge, "model", None)) if m is not None]
    was_training = [m.training for m in models]
    for m in models:  # moved outside inference mode, so moved parameters stay trainable
        m.to(device).eval()
    rows = cfg.num_samples * cfg.best_of
    try:
        show = bool(progress) if progress is not None else bool(cfg.progress and sys.stderr.isatty())
        run = _Run(lm, cfg, vocab, inspector, device)
        with torch.inference_mode(), _autocast(device):
            if causal:
                x, generated, steps = _causal(run, vocab, cfg, prompt_ids, rows, show)
            else:
                x, generated, steps = _diffusion(run, vocab, cfg, prompt_ids, template, rows, show)
            confidence = self_confidence(lm, x, generated, vocab.mask_id, vocab.text_vocab_size)
            start = 1 if causal and not prompt_ids else 0  # a causal model's starting newline is not text
            ids = x[:, start:].tolist()
            confidence = confidence.tolist()
            steps = steps.tolist()
            scores = judge.score(ids) if judge is not None else None
    finally:
        for m, mode in zip(models, was_training):
            m.train(mode)
    keep = list(range(rows))
    if scores is not None and cfg.best_of > 1:
        keep = [j * cfg.best_of + judge.best(scores[j * cfg.best_of:(j + 1) * cfg.best_of])
                for j in range(cfg.num_samples)]
    seconds = time.perf_counter() - started
    return [Sample(ids=ids[r], self_confidence=float(confidence[r]),
                   judge_score=None if scores is None else float(scores[r]), steps=int(steps[r]), seconds=seconds)
            for r in keep]


def _diffusion(run: _Run, vocab, cfg, prompt_ids, template, rows, show):
    if template is not None:
        template = list(template)
        _check_ids(template, vocab, "template", allow_none=True)
        free = np.array([i is None for i in template], dtype=bool)
        base = [vocab.mask_id if i is None else int(i) for i in template]
    else:
        prompt = list(prompt_ids or [])
        _check_ids(prompt, vocab, "prompt_ids")
        free = np.array([False] * len(prompt) + [True] * cfg.length, dtype=bool)
        base = prompt + [vocab.mask_id] * cfg.length
    if not free.any():
        raise UserError("the infill template has no position to fill")
    x = torch.tensor(base, dtype=torch.long, device=run.device).repeat(rows, 1)  # (R, N)
    steps = run.diffuse(x, free, show)
    return x, free, steps


def _causal(run: _Run, vocab, cfg, prompt_ids, rows, show):
    prompt = list(prompt_ids or [])
    _check_ids(prompt, vocab, "prompt_ids")
    if not prompt:
        if vocab.newline_id is None:
            raise UserError("a causal model without a prompt starts from a newline, which this vocabulary lacks; "
                            "give a prompt")
        prompt = [vocab.newline_id]
    x = torch.tensor(prompt, dtype=torch.long, device=run.device).repeat(rows, 1)
    x = run.left_to_right(x, cfg.length, show)
    generated = np.array([False] * len(prompt) + [True] * cfg.length, dtype=bool)
    return x, generated, torch.full((rows,), cfg.length, dtype=torch.long)

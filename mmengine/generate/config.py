"""``SampleConfig``: every setting of the sampler, one field each (the future ``[sample]`` TOML table).

Fields are declared like the tables of :mod:`mmengine.config`: a default, a one-sentence help and,
for fixed string choices, ``metadata["choices"]``. Field types are only int, float, bool, str and
list, so a TOML table maps onto the dataclass one to one. :meth:`SampleConfig.validate` checks the
values on their own (what needs the models, such as ``block_length`` against the LM's context, is
checked by :func:`mmengine.generate.generate`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from mmengine.errors import ConfigError

SCHEDULES = ("linear", "cosine", "exponential", "custom")
REMASKING = ("auto", "random", "low_confidence", "self_surprise", "inspector", "threshold", "mixed")
#: Strategies that read P(wrong) from an inspector.
INSPECTOR_STRATEGIES = ("inspector", "threshold", "mixed")
JUDGE_DIRECTIONS = ("auto", "higher", "lower")
AGGREGATES = ("mean", "min", "max")


@dataclass
class SampleConfig:
    """[sample] how texts are generated: start, schedule, token choice, remasking, inspector, judge."""

    num_samples: int = field(default=1, metadata={"help": "Number of samples returned."})
    length: int = field(default=200, metadata={
        "help": "New tokens per sample after the prompt (an infill template sets its own length)."})
    steps: int = field(default=32, metadata={
        "help": "Unmasking steps per block (one LM forward each); with schedule='custom' one per list entry."})
    schedule: str = field(default="linear", metadata={
        "help": "Masked fraction after each step: 'linear', 'cosine', 'exponential' or 'custom' (custom_schedule).",
        "choices": SCHEDULES})
    custom_schedule: list = field(default_factory=list, metadata={
        "help": "schedule='custom': the masked fraction after each step, one entry per step, the last 0.0.",
        "items": "numbers"})
    start_ratio: float = field(default=1.0, metadata={
        "help": "Masked fraction the schedule starts from (before the first step), in [0, 1]."})
    end_ratio: float = field(default=0.0, metadata={
        "help": "Masked fraction the schedule heads for, in [0, 1]; the last step still leaves nothing masked."})
    temperature: float = field(default=0.8, metadata={
        "help": "Softmax temperature of the token choice; 0 picks the most probable token (greedy)."})
    top_k: int = field(default=0, metadata={"help": "Choose only among the k most probable tokens (0 = all)."})
    top_p: float = field(default=1.0, metadata={
        "help": "Nucleus sampling: choose among the most probable tokens holding this much probability, in (0, 1]."})
    repetition_penalty: float = field(default=1.0, metadata={
        "help": "Logits of tokens present within repetition_window positions are divided (positive) or multiplied "
                "(negative) by this (1 = off)."})
    repetition_window: int = field(default=16, metadata={
        "help": "Distance (either side; revealed tokens only) within which a token counts as a repeat."})
    remasking: str = field(default="auto", metadata={
        "help": "Which revealed tokens are masked again: 'auto' ('mixed' with an inspector, else 'random': the best "
                "measured, benchmarks/QUALITY.md), 'random', 'low_confidence', 'self_surprise', 'inspector', "
                "'threshold' or 'mixed'.",
        "choices": REMASKING})
    randomness: float = field(default=0.5, metadata={
        "help": "remasking='inspector': score = randomness * U(0,1) + (1 - randomness) * P(wrong), in [0, 1]."})
    threshold: float = field(default=0.5, metadata={
        "help": "remasking='threshold'/'mixed': tokens with P(wrong) above this are candidates, in [0, 1)."})
    min_random: float = field(default=0.2, metadata={
        "help": "remasking='mixed': share of each step's scheduled count that is always random, in [0, 1]."})
    check_every: int = field(default=4, metadata={
        "help": "remasking='threshold': look for an early stop every this many steps (one host sync each)."})
    block_length: int = field(default=0, metadata={
        "help": "Semi-autoregressive blocks of this many tokens, left to right (0 = as much as the context holds)."})
    best_of: int = field(default=1, metadata={
        "help": "Candidates generated per requested sample; the judge keeps the best (> 1 needs a judge)."})
    inspector: str = field(default="", metadata={
        "help": "Token-classifier checkpoint whose P(wrong) = 1 - P(class 0) guides remasking."})
    judge: str = field(default="", metadata={
        "help": "Sequence-scorer checkpoint that scores every sample (and picks the best of best_of)."})
    judge_direction: str = field(default="auto", metadata={
        "help": "Is a high judge score good: 'auto' (as the scorer's checkpoint says), 'higher' or 'lower'.",
        "choices": JUDGE_DIRECTIONS})
    judge_aggregate: str = field(default="mean", metadata={
        "help": "How the judge combines the windows of a text longer than its context: 'mean', 'min' or 'max'.",
        "choices": AGGREGATES})
    prompt: str = field(default="", metadata={"help": "Text the samples continue (kept unchanged)."})
    infill: str = field(default="", metadata={
        "help": "Text with masked spans to fill ('[MASK]' = one token, a run of 2+ '_' = one token per '_'); "
                "everything else is kept."})
    seed: int = field(default=0, metadata={
        "help": "Random seed; the same seed, settings and device give the same samples."})
    out: str = field(default="", metadata={"help": "File the samples are written to as JSON lines "
                                                   "(empty = print them)."})
    device: str = field(default="auto", metadata={"help": "'auto' (CUDA when there is one), 'cpu', "
                                                          "'cuda' or 'cuda:N'."})
    progress: bool = field(default=True, metadata={
        "help": "Show a progress bar over steps on stderr when it is a terminal."})

    def validate(self, *, check_paths: bool = True) -> SampleConfig:
        """Raise :class:`~mmengine.config.ConfigError` (a ValueError) naming the first bad field; returns self.

        ``check_paths=False`` skips the checks that an inspector / judge checkpoint path is set (for
        callers that pass the models themselves, as :func:`mmengine.generate.generate` does).
        """
        for f in fields(self):
            value = getattr(self, f.name)
            type_name = f.type if isinstance(f.type, str) else f.type.__name__
            expected = {"int": int, "float": float, "bool": bool, "str": str, "list": list}[type_name]
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
                setattr(self, f.name, value)
            if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                raise ConfigError(f"sample.{f.name} must be of type {type_name}, got {value!r}")
            if expected is float and not math.isfinite(value):
                raise ConfigError(f"sample.{f.name} must be a finite number, got {value!r}")
            choices = f.metadata.get("choices")
            if choices and value not in choices:
                raise ConfigError(f"sample.{f.name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
        for name in ("num_samples", "length", "steps", "best_of", "check_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"sample.{name} must be at least 1, got {getattr(self, name)}")
        for name in ("top_k", "repetition_window", "block_length"):
            if getattr(self, name) < 0:
                raise ConfigError(f"sample.{name} must be 0 or more, got {getattr(self, name)}")
        if self.temperature < 0:
            raise ConfigError(f"sample.temperature must be 0 (greedy) or positive, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"sample.top_p must be in (0, 1], got {self.top_p}")
        if self.repetition_penalty <= 0:
            raise ConfigError(f"sample.repetition_penalty must be positive (1 = off), got {self.repetition_penalty}")
        for name in ("start_ratio", "end_ratio", "randomness", "min_random"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"sample.{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.threshold < 1.0:
            raise ConfigError(f"sample.threshold must be in [0, 1), got {self.threshold}")
        self._validate_schedule()
        if check_paths and self.remasking in INSPECTOR_STRATEGIES and not self.inspector:
            raise ConfigError(f"sample.remasking={self.remasking!r} needs sample.inspector "
                              "(a token-classifier checkpoint)")
        if check_paths and self.best_of > 1 and not self.judge:
            raise ConfigError(f"sample.best_of={self.best_of} needs sample.judge "
                              "(a sequence-scorer checkpoint) to pick the best")
        if self.prompt and self.infill:
            raise ConfigError("sample.prompt and sample.infill exclude each other; put the prompt's text at the start "
                              "of the infill template")
        if (self.device != "auto" and self.device != "cpu"
                and not (self.device == "cuda" or self.device.startswith("cuda:"))):
            raise ConfigError(f"sample.device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        return self

    def _validate_schedule(self) -> None:
        if self.schedule != "custom":
            if self.custom_schedule:
                raise ConfigError("sample.custom_schedule is set but sample.schedule is not 'custom'")
            return
        ratios = self.custom_schedule
        if not ratios:
            raise ConfigError("sample.schedule='custom' needs sample.custom_schedule, "
                              "the masked fraction after each step")
        for i, r in enumerate(ratios):
            if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0.0 <= r <= 1.0:
                raise ConfigError(f"sample.custom_schedule[{i}] must be a number in [0, 1], got {r!r}")
        if ratios[-1] != 0:
            raise ConfigError("sample.custom_schedule must end with 0.0 (the last step leaves nothing masked), "
                              f"got {ratios[-1]}")
        if self.steps != len(ratios):
            raise ConfigError("sample.schedule='custom' runs one step per custom_schedule entry, "
                              f"so set sample.steps={len(ratios)} (it is {self.steps})")

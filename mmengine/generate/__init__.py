"""Generation with the three modes together: the LM writes, the inspector points, the judge rates.

* :func:`generate` - the batched sampler (ids in, :class:`Sample` out); :func:`sample_texts` - the same on text.
* :class:`SampleConfig` - every setting (the ``[sample]`` table); :class:`SamplerVocab` - text and special ids.
* :class:`Inspector` - P(wrong) per token from a token classifier; :class:`Judge` - scores from a sequence scorer.
* :func:`score_texts`, :func:`classify_texts`, :func:`render_classified` - modes 3 and 2 on new text.

Module map: ``config`` (settings), ``vocab``, ``schedule`` (masked fraction per step), ``choice``
(token choice), ``sampler`` (the step loop, blocks, remasking strategies, self-confidence),
``inspector``, ``judge``, ``windows`` (long texts in context windows), ``text`` (text-level calls).
"""
from mmengine.generate.config import SampleConfig
from mmengine.generate.inspector import Inspector
from mmengine.generate.judge import Judge
from mmengine.generate.sampler import Sample, generate, self_confidence
from mmengine.generate.text import (
    classify_texts,
    parse_infill,
    render_classified,
    sample_texts,
    score_texts,
)
from mmengine.generate.vocab import SamplerVocab

__all__ = [
    "Inspector",
    "Judge",
    "Sample",
    "SampleConfig",
    "SamplerVocab",
    "classify_texts",
    "generate",
    "parse_infill",
    "render_classified",
    "sample_texts",
    "score_texts",
    "self_confidence",
]

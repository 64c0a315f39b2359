"""``SamplerVocab``: which ids are text, which are special, and how they fit a model's embedding."""
from __future__ import annotations

from dataclasses import dataclass

from mmengine.errors import UserError

#: The earlier research trainer's character models reserve 15 ids after the text vocabulary
#: (65 characters -> an 80-row embedding); its checkpoints carry no data description.
LEGACY_RESERVED_IDS = 15


@dataclass(frozen=True)
class SamplerVocab:
    """The ids the sampler needs; every id >= ``text_vocab_size`` is special and never generated.

    Fields:
        text_vocab_size: ids [0, text_vocab_size) are text.
        vocab_size: text + special ids (the data's total; a model's embedding may be larger or, for a
            nanoGPT model without specials, equal to text_vocab_size).
        mask_id: [MASK] (None: the vocabulary has none, e.g. a nanoGPT character set).
        cls_id: [CLS] (what the judge puts first), or None.
        pad_id: [PAD] (what the judge pads with), or None.
        newline_id: the id of "\\n" when it is one token (where a causal model without a prompt starts), or None.
    """

    text_vocab_size: int
    vocab_size: int
    mask_id: int | None = None
    cls_id: int | None = None
    pad_id: int | None = None
    newline_id: int | None = None

    def __post_init__(self):
        if (isinstance(self.text_vocab_size, bool) or not isinstance(self.text_vocab_size, int)
                or self.text_vocab_size < 1):
            raise ValueError(f"text_vocab_size must be a positive integer, got {self.text_vocab_size!r}")
        if (isinstance(self.vocab_size, bool) or not isinstance(self.vocab_size, int)
                or self.vocab_size < self.text_vocab_size):
            raise ValueError("vocab_size must be an integer >= text_vocab_size "
                             f"({self.text_vocab_size}), got {self.vocab_size!r}")
        for name in ("mask_id", "cls_id", "pad_id"):
            i = getattr(self, name)
            if i is not None and not (isinstance(i, int) and self.text_vocab_size <= i < self.vocab_size):
                raise ValueError(f"{name} must be a special id in [{self.text_vocab_size}, {self.vocab_size}), "
                                 f"got {i!r}")
        if self.newline_id is not None and not (isinstance(self.newline_id, int)
                                                and 0 <= self.newline_id < self.text_vocab_size):
            raise ValueError(f"newline_id must be a text id in [0, {self.text_vocab_size}), got {self.newline_id!r}")

    @classmethod
    def from_meta(cls, meta, tokenizer=None) -> SamplerVocab:
        """From a :class:`mmengine.data.dataset.DataMeta` (and its tokenizer, to find "\\n" in a BPE vocabulary)."""
        ids = meta.special_ids
        return cls(text_vocab_size=int(meta.text_vocab_size), vocab_size=int(meta.vocab_size),
                   mask_id=ids.get("[MASK]"), cls_id=ids.get("[CLS]"), pad_id=ids.get("[PAD]"),
                   newline_id=_newline_id(meta, tokenizer))

    def is_special(self, i: int) -> bool:
        return i >= self.text_vocab_size

    def check_model(self, model, role: str, *, text_vocab_size: int | None = None) -> None:
        """Refuse, in one sentence, a model whose vocabulary is not this one.

        ``text_vocab_size`` is the model's own text vocabulary when its checkpoint recorded it (then
        it must match). Without it the embedding must have as many rows as this vocabulary, or the
        earlier trainer's layout (text + 15 reserved ids).
        """
        rows = int(model.config.vocab_size)
        if text_vocab_size is not None and text_vocab_size != self.text_vocab_size:
            raise UserError(f"the {role} was trained on a text vocabulary of {text_vocab_size} tokens, "
                            f"the language model's has {self.text_vocab_size}")
        if rows < self.text_vocab_size:
            raise UserError(f"the {role}'s embedding has {rows} rows, fewer than the {self.text_vocab_size} text "
                            "tokens of the language model's vocabulary")
        if text_vocab_size is None and rows not in (self.vocab_size, self.text_vocab_size + LEGACY_RESERVED_IDS):
            raise UserError(f"the {role}'s embedding has {rows} rows, which does not fit the language model's "
                            f"vocabulary ({self.text_vocab_size} text tokens, {self.vocab_size} ids)")


def _newline_id(meta, tokenizer) -> int | None:
    chars = (meta.tokenizer_config or {}).get("chars")
    if chars and "\n" in chars:
        return chars.index("\n")
    if tokenizer is not None:
        try:
            ids = list(tokenizer.encode("\n"))
        except ValueError:  # a tokenizer that cannot encode a newline has no newline id
            return None
        if len(ids) == 1 and 0 <= int(ids[0]) < meta.text_vocab_size:
            return int(ids[0])
    sep = list(meta.separator_ids or [])
    if len(sep) == 2 and sep[0] == sep[1]:  # "\n\n" written as two newline ids
        return int(sep[0])
    return None

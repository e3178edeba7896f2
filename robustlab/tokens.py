"""A generated token-classification task and a tiny embedding model: the text setting of the
defences and attacks that act on word embeddings (FreeLB, embedding-space PGD) before the
course has a text lesson.

The task is sentiment in miniature. A sequence of token ids holds one or three *keywords*,
each positive or negative, among neutral *distractors*; a keyword right after the negation
token "not" counts with the opposite sign. The label is 1 when the signed count is positive,
0 when it is negative (an odd number of +-1 terms is never 0, so there are no ties). Reading
it needs word identity (which tokens are keywords) and a little context (the token before):
a bag of words cannot solve it, a convolution of width 2 can.

Vocabulary (ids), for ``vocab >= 12``:

| ids | role |
| --- | --- |
| 0 (`NOT`) | the negation, flips the keyword right after it |
| 1-4 (`POSITIVE`) | positive keywords |
| 5-8 (`NEGATIVE`) | negative keywords |
| 9 .. vocab-1 | distractors |

Embedding models follow one protocol, which `robustlab.attacks.embedding` and
`robustlab.defences.freelb` rely on: ``model.embed(ids)`` maps ids (N, L) to embeddings
(N, L, d), ``model.forward_embeds(e)`` maps embeddings to logits (N, K), and
``model(ids) == model.forward_embeds(model.embed(ids))``; an integer attribute ``vocab``, where
there is one, lets the attacks check the ids' range. `TokenCNN` is one; a perturbation
of the embeddings is then ``model.forward_embeds(model.embed(ids) + delta)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_positive
from ._model import check_model

__all__ = ["NEGATIVE", "NOT", "POSITIVE", "TokenCNN", "check_embedding_model", "check_token_ids",
           "token_task"]

NOT = 0
POSITIVE = (1, 2, 3, 4)
NEGATIVE = (5, 6, 7, 8)
_FIRST_DISTRACTOR = 9
MIN_VOCAB = 12


def token_task(n: int, *, seq_len: int = 16, vocab: int = 32, seed: int = 0,
               negation: float = 0.3) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` sequences of the keyword-counting task and their labels: ``(ids, labels)``, ids a
    long tensor (n, seq_len) in [0, vocab), labels a long tensor (n,) in {0, 1}.

    Keywords sit at odd positions (so the slot before each is free for a negation); each
    sequence has 1 or 3 of them (equally likely), each positive or negative with probability
    1/2 and negated with probability `negation`. Every other slot holds a distractor, or, with
    probability `negation` / 2, a "not" that precedes a distractor and so changes nothing.
    The same `seed` gives the same data on every machine (a CPU generator).
    """
    check_positive(n, "n", integer=True)
    check_positive(seq_len, "seq_len", integer=True)
    check_positive(vocab, "vocab", integer=True)
    if seq_len < 6:
        raise ValueError(f"seq_len must be >= 6 (three keywords, each after a free slot), "
                         f"got {seq_len}")
    if vocab < MIN_VOCAB:
        raise ValueError(f"vocab must be >= {MIN_VOCAB} (ids 0-8 are the negation and the "
                         f"keywords, the rest distractors), got {vocab}")
    if isinstance(negation, bool) or not isinstance(negation, (int, float)):
        raise TypeError(f"negation must be a number, got {type(negation).__name__}")
    if not 0 <= negation <= 1:
        raise ValueError(f"negation must lie in [0, 1], got {negation}")
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(_FIRST_DISTRACTOR, vocab, (n, seq_len), generator=g)
    odd = torch.arange(1, seq_len, 2)
    # three distinct odd slots per sequence, the first m of which hold keywords
    slots = odd[torch.rand(n, len(odd), generator=g).argsort(1)[:, :3]]
    m = 1 + 2 * torch.randint(0, 2, (n,), generator=g)
    used = torch.arange(3) < m[:, None]
    sign = torch.randint(0, 2, (n, 3), generator=g) * 2 - 1
    word = torch.randint(0, 4, (n, 3), generator=g)
    keyword = torch.where(sign > 0, torch.tensor(POSITIVE)[word], torch.tensor(NEGATIVE)[word])
    negated = torch.rand(n, 3, generator=g) < negation
    # idle negations first, so that a keyword's own negation (set below) is never overwritten
    idle = torch.rand(n, len(odd), generator=g) < negation / 2
    ids[:, odd - 1] = torch.where(idle, NOT, ids[:, odd - 1])
    rows = torch.arange(n)[:, None].expand(n, 3)
    ids[rows[used], slots[used]] = keyword[used]
    before = ids[rows[used], slots[used] - 1]
    ids[rows[used], slots[used] - 1] = torch.where(negated[used], NOT, torch.where(
        before == NOT, torch.randint(_FIRST_DISTRACTOR, vocab, before.shape, generator=g), before))
    effect = torch.where(used, sign * torch.where(negated, -1, 1), 0)
    return ids, (effect.sum(1) > 0).long()


def check_token_ids(ids, vocab: int | None = None, name: str = "ids", *,
                    check_range: bool = True) -> torch.Tensor:
    """Token ids: an integer tensor (N, L) with N, L > 0, within [0, vocab) when known.

    The range check reads one number back from the device; `check_range=False` skips it for
    calls inside a training loop (an embedding lookup refuses bad ids itself)."""
    if not isinstance(ids, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of token ids, got {type(ids).__name__}")
    if ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise TypeError(f"{name} must hold integer token ids, got dtype {ids.dtype}")
    if ids.dim() != 2 or 0 in ids.shape:
        raise ValueError(f"{name} must have shape (N, L) with N, L > 0, got {tuple(ids.shape)}")
    if not check_range:
        return ids.long()
    lo, hi = (t.item() for t in torch.aminmax(ids))  # one sync
    if lo < 0 or (vocab is not None and hi >= vocab):
        bound = f"[0, {vocab})" if vocab is not None else ">= 0"
        raise ValueError(f"{name} holds token ids outside {bound}: range [{lo}, {hi}]")
    return ids.long()


def check_embedding_model(model) -> nn.Module:
    """`model` must be a torch module with ``embed(ids)`` and ``forward_embeds(e)``."""
    check_model(model)
    missing = [m for m in ("embed", "forward_embeds") if not callable(getattr(model, m, None))]
    if missing:
        raise TypeError(f"model must be an embedding model with embed(ids) and "
                        f"forward_embeds(e) (see robustlab.tokens); it lacks {missing}")
    return model


class TokenCNN(nn.Module):
    """Embedding -> 1-D convolution (width `kernel`) -> ReLU -> mean over positions -> linear.

    Width 2 lets a filter see "not" beside the keyword it negates; the mean over positions
    counts what the filters find. Follows the embedding-model protocol of this module:
    ``embed(ids)``, ``forward_embeds(e)``, and ``forward(ids)`` or ``forward(embeds=e)``.
    """

    def __init__(self, vocab: int = 32, dim: int = 16, channels: int = 32, num_classes: int = 2,
                 kernel: int = 2):
        super().__init__()
        for value, name in ((vocab, "vocab"), (dim, "dim"), (channels, "channels"),
                            (num_classes, "num_classes"), (kernel, "kernel")):
            check_positive(value, name, integer=True)
        self.vocab = vocab
        self.embedding = nn.Embedding(vocab, dim)
        self.conv = nn.Conv1d(dim, channels, kernel)
        self.head = nn.Linear(channels, num_classes)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Embeddings (N, L, dim) of token ids (N, L)."""
        return self.embedding(check_token_ids(ids, self.vocab, check_range=False))

    def forward_embeds(self, e: torch.Tensor) -> torch.Tensor:
        """Logits (N, K) of embeddings (N, L, dim); L must be at least the kernel width."""
        if e.dim() != 3 or e.shape[2] != self.embedding.embedding_dim:
            raise ValueError(f"embeds must have shape (N, L, {self.embedding.embedding_dim}), "
                             f"got {tuple(e.shape)}")
        h = F.relu(self.conv(e.transpose(1, 2)))  # (N, channels, L - kernel + 1)
        return self.head(h.mean(2))

    def forward(self, ids: torch.Tensor | None = None, *,
                embeds: torch.Tensor | None = None) -> torch.Tensor:
        """Logits from token ids, or from embeddings given as ``embeds=`` (exactly one)."""
        if (ids is None) == (embeds is None):
            raise ValueError("TokenCNN takes ids or embeds=, exactly one of them")
        return self.forward_embeds(self.embed(ids) if embeds is None else embeds)

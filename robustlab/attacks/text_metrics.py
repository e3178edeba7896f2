"""How close an adversarial text stays to the original (the tutorial's "metrics for measuring
similarity of sentences or text"), and the result object every text attack returns.

- `edit_distance`: Levenshtein distance (insertions, deletions, substitutions), on characters
  of two strings or on two lists of words;
- `word_overlap`: the share of words the two texts have in common, as multisets:
  |A ∩ B| / max(|A|, |B|) (1 for identical texts, 0 for texts with no word in common);
- `embedding_cosine`: cosine of the mean word vectors of the two texts (`text_data.WordVectors`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch

from ..tables import Tabular, markdown_table
from ..text_data import WordVectors

__all__ = ["TextAttackResult", "edit_distance", "embedding_cosine", "text_similarity",
           "word_overlap"]


def edit_distance(a, b) -> int:
    """Levenshtein distance between two strings (characters) or two lists (e.g. of words)."""
    if not isinstance(a, (str, list, tuple)) or not isinstance(b, (str, list, tuple)):
        raise TypeError(f"edit_distance takes two strings or two lists, got "
                        f"{type(a).__name__} and {type(b).__name__}")
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def word_overlap(a: str, b: str) -> float:
    """|A ∩ B| / max(|A|, |B|) for the multisets of words A, B of texts `a`, `b` (1 if both are
    empty)."""
    if not isinstance(a, str) or not isinstance(b, str):
        raise TypeError("word_overlap takes two strings")
    wa, wb = Counter(a.split()), Counter(b.split())
    longest = max(sum(wa.values()), sum(wb.values()))
    return 1.0 if longest == 0 else sum((wa & wb).values()) / longest


def embedding_cosine(a: str, b: str, vectors: WordVectors) -> float:
    """Cosine similarity of the mean vectors of the known words of `a` and `b` (0 when either
    has no known word)."""
    if not isinstance(vectors, WordVectors):
        raise TypeError(f"vectors must be a robustlab.text_data.WordVectors, got "
                        f"{type(vectors).__name__}")
    u, v = vectors.sentence(a), vectors.sentence(b)
    if not u.any() or not v.any():
        return 0.0
    return float(torch.nn.functional.cosine_similarity(u, v, dim=0))


def text_similarity(original: list[str], adversarial: list[str],
                    vectors: WordVectors | None = None) -> dict[str, list]:
    """Per example: character edit distance, word edit distance, word overlap and (with
    `vectors`) embedding cosine."""
    if len(original) != len(adversarial):
        raise ValueError(f"original and adversarial differ in length: {len(original)} and "
                         f"{len(adversarial)}")
    out = {"edit_distance": [edit_distance(a, b) for a, b in zip(original, adversarial)],
           "word_edits": [edit_distance(a.split(), b.split()) for a, b in zip(original, adversarial)],
           "word_overlap": [word_overlap(a, b) for a, b in zip(original, adversarial)]}
    if vectors is not None:
        out["cosine"] = [embedding_cosine(a, b, vectors) for a, b in zip(original, adversarial)]
    return out


def _mean(values) -> float:
    return sum(values) / len(values) if values else float("nan")


@dataclass
class TextAttackResult(Tabular):
    """What a text attack found: the adversarial texts, which of them succeed and how far each
    moved from its original.

    ``success[i]``: the model classified ``original[i]`` right and ``adversarial[i]`` wrong (an
    example the model already got wrong is left as it was and never counts); ``edits[i]``: the
    attack's own count of changes (flipped characters, bugged words, substituted words), within
    its ``constraint``; ``similarity``: `text_similarity` per example. Tensors lie on the
    model's device."""

    attack: str
    constraint: str
    original: list[str]
    adversarial: list[str]
    clean: torch.Tensor
    success: torch.Tensor
    edits: torch.Tensor
    similarity: dict

    @property
    def success_rate(self) -> float:
        """Successes among the examples the model classified right (NaN if none)."""
        n = int(self.clean.sum())
        return float("nan") if n == 0 else int(self.success.sum()) / n

    def _over_success(self, values) -> float:
        return _mean([v for v, s in zip(values, self.success.tolist()) if s])

    def summary(self) -> dict:
        """Success rate and, over the successes, mean edits and similarities."""
        out = {"success rate": self.success_rate,
               "edits": self._over_success(self.edits.tolist())}
        out.update({k: self._over_success(v) for k, v in self.similarity.items()})
        return out

    def table(self) -> str:
        s = self.summary()
        return markdown_table(["attack", "constraint", "clean", *s],
                              [[self.attack, self.constraint, int(self.clean.sum()), *s.values()]],
                              decimals=[None, None, None] + [3] * len(s))

    def examples(self, k: int = 5) -> str:
        """The first `k` successes side by side, with their similarity numbers."""
        rows = [[self.original[i], self.adversarial[i],
                 *(self.similarity[m][i] for m in self.similarity)]
                for i in range(len(self.original)) if self.success[i]][:k]
        return markdown_table(["original", "adversarial", *self.similarity], rows, decimals=3)

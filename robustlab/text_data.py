"""A sentiment corpus the project makes itself, its tokenisers, word vectors and synonym table:
the data of the text attacks (`robustlab.attacks.text`), offline and seeded.

Sentences are templated from the word lists below: an optional opener, a subject ("the plot",
"this film"), a verb, an optional negation ("not", "never"), an optional intensifier and a
sentiment adjective, an optional ending. The label is 1 (positive) when the adjective's polarity,
flipped by a negation, is positive. Within each group of synonyms the first word is common and
the last rare (weights 8 : 4 : 2 : 1), as in real text, where "perfect" is common and "spotless"
is not: a model learns the rare words less well, the weakness synonym substitution exploits.

`word_vectors` trains word embeddings on the corpus (positive PMI of co-occurrences in a window,
then a truncated SVD: Levy and Goldberg, NIPS 2014); `synonym_table` lists each word's synonyms
from the project's own groups with the cosine similarity of their vectors.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from ._checks import check_choice, check_in_range, check_positive, check_seed

__all__ = ["CharTokenizer", "SYNONYM_GROUPS", "WordTokenizer", "WordVectors", "all_words",
           "char_tokenizer", "sentiment_corpus", "synonym_table", "word_tokenizer", "word_vectors"]

POSITIVE_GROUPS = (("good", "fine", "decent", "nice"), ("great", "excellent", "superb", "terrific"),
                   ("wonderful", "marvelous", "delightful", "lovely"),
                   ("perfect", "flawless", "spotless", "impeccable"),
                   ("enjoyable", "pleasant", "entertaining", "charming"),
                   ("brilliant", "outstanding", "remarkable", "stellar"))
NEGATIVE_GROUPS = (("bad", "poor", "lousy", "weak"), ("terrible", "horrible", "dreadful", "atrocious"),
                   ("boring", "dull", "tedious", "bland"),
                   ("disappointing", "underwhelming", "unsatisfying", "lacklustre"),
                   ("annoying", "irritating", "grating", "tiresome"),
                   ("awful", "abysmal", "appalling", "pathetic"))
INTENSIFIER_GROUPS = (("very", "really", "truly", "quite"),
                      ("extremely", "incredibly", "hugely", "exceedingly"))
NOUN_GROUPS = (("movie", "film", "picture", "flick"), ("plot", "story", "storyline", "narrative"),
               ("acting", "performance", "casting", "portrayal"),
               ("music", "soundtrack", "score", "melody"), ("ending", "finale", "conclusion", "climax"),
               ("script", "dialogue", "writing", "screenplay"))
VERB_GROUPS = (("was", "is"), ("seemed", "felt", "appeared"))
SYNONYM_GROUPS = POSITIVE_GROUPS + NEGATIVE_GROUPS + INTENSIFIER_GROUPS + NOUN_GROUPS + VERB_GROUPS
DETERMINERS = ("the", "this", "that")
NEGATIONS = ("not", "never")
OPENERS = ("honestly", "overall", "frankly", "in my opinion", "i think", "to be fair", "all in all")
ENDINGS = ("from start to finish", "at times", "for a sequel", "for its genre", "throughout",
           "in the end", "on the whole", "if you ask me")
_WEIGHTS = (8, 4, 2, 1)


def _pick(rng: random.Random, group: tuple[str, ...]) -> str:
    return rng.choices(group, weights=_WEIGHTS[:len(group)])[0]


def _sentence(rng: random.Random, label: int) -> str:
    negated = rng.random() < 0.3
    groups = POSITIVE_GROUPS if (label == 1) != negated else NEGATIVE_GROUPS
    adj = _pick(rng, rng.choice(groups))
    intens = [_pick(rng, rng.choice(INTENSIFIER_GROUPS))] if rng.random() < 0.5 else []
    neg = [rng.choice(NEGATIONS)] if negated else []
    noun = _pick(rng, rng.choice(NOUN_GROUPS))
    opener = [rng.choice(OPENERS)] if rng.random() < 0.3 else []
    ending = [rng.choice(ENDINGS)] if rng.random() < 0.3 else []
    template = rng.randrange(3)
    if template == 0:
        verb = _pick(rng, rng.choice(VERB_GROUPS))
        words = [*opener, rng.choice(DETERMINERS), noun, verb, *neg, *intens, adj, *ending]
    elif template == 1:
        words = [*opener, "i", "found", rng.choice(DETERMINERS), noun, *neg, *intens, adj, *ending]
    else:
        words = [*opener, "i", "did", *(["not"] if negated else []), "think", "the", noun, "was",
                 *intens, adj, *ending]
    return " ".join(words)


def sentiment_corpus(split: str = "train", *, n: int = 2400, seed: int = 0,
                     test_fraction: float = 0.25) -> tuple[list[str], torch.Tensor]:
    """The templated sentiment corpus: ``(texts, labels)``, labels a long tensor in {0, 1}.

    `n` sentences in all, exactly half of each label, shuffled with `seed` (Python's own
    generator: the same sentences on every machine); the last `test_fraction` of them are the
    "test" split, the rest "train" ("all" returns every sentence).
    """
    check_choice(split, ("train", "test", "all"), "split")
    check_positive(n, "n", integer=True)
    check_seed(seed)
    check_in_range(test_fraction, "test_fraction", 0, 1, low_open=True, high_open=True)
    if n < 4:
        raise ValueError(f"n must be >= 4 (two of each label, one of them in each split), got {n}")
    rng = random.Random(seed)
    labels = [i % 2 for i in range(n)]
    rng.shuffle(labels)
    texts = [_sentence(rng, label) for label in labels]
    cut = n - max(1, round(n * test_fraction))
    part = {"train": slice(0, cut), "test": slice(cut, n), "all": slice(0, n)}[split]
    return texts[part], torch.tensor(labels[part], dtype=torch.long)


def all_words() -> list[str]:
    """Every word the corpus can use, sorted."""
    words = {w for g in SYNONYM_GROUPS for w in g}
    for phrase in (*DETERMINERS, *NEGATIONS, *OPENERS, *ENDINGS, "i found", "i did think the"):
        words.update(phrase.split())
    return sorted(words)


class _Tokenizer:
    """Shared by both tokenisers: ids 0 (padding) and 1 (unknown), then the symbols; every text
    is padded on the right to the fixed `length`, so a model sees the same input whatever batch
    a sentence comes in."""

    PAD, UNK = 0, 1

    def __init__(self, symbols, length: int):
        check_positive(length, "length", integer=True)
        self.symbols = ["<pad>", "<unk>", *symbols]
        self.index = {s: i for i, s in enumerate(self.symbols)}
        self.length = length

    @property
    def vocab(self) -> int:
        return len(self.symbols)

    sep = " "  # between symbols: a space for words, nothing for characters

    def split(self, text: str) -> list[str]:
        return text.split() if self.sep else list(text)

    def join(self, symbols: list[str]) -> str:
        return self.sep.join(symbols)

    def encode(self, texts) -> torch.Tensor:
        """Ids (N, length), long, on the CPU; unknown symbols become 1, padding 0."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts) or not texts:
            raise TypeError("texts must be a non-empty list of strings")
        out = torch.zeros(len(texts), self.length, dtype=torch.long)
        for i, text in enumerate(texts):
            parts = self.split(text)
            if len(parts) > self.length:
                raise ValueError(f"texts[{i}] has {len(parts)} tokens, more than the tokenizer's "
                                 f"length {self.length}: {text!r}")
            if parts:
                out[i, :len(parts)] = torch.tensor([self.index.get(p, self.UNK) for p in parts])
        return out

    def decode(self, ids: torch.Tensor) -> list[str]:
        """Texts of ids (N, L); padding dropped, unknown ids shown as "<unk>"."""
        return [self.join([self.symbols[i] for i in row if i != self.PAD])
                for row in ids.tolist()]


class WordTokenizer(_Tokenizer):
    """Words split on spaces; a word outside the vocabulary (a typo) is the unknown id 1."""

    sep = " "


class CharTokenizer(_Tokenizer):
    """One id per character; characters outside the alphabet are the unknown id 1."""

    sep = ""


ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789 @$!'"


def word_tokenizer(length: int = 24) -> WordTokenizer:
    """The tokenizer of the corpus's words (`all_words`), `length` words per text."""
    return WordTokenizer(all_words(), length)


def char_tokenizer(length: int = 100) -> CharTokenizer:
    """Lower-case letters, digits, space and a few symbols the visual bugs use (@ $ !)."""
    return CharTokenizer(ALPHABET, length)


@dataclass
class WordVectors:
    """Word embeddings: ``vectors[i]`` is the vector of ``words[i]`` (float64, CPU)."""

    words: list[str]
    vectors: torch.Tensor

    def __post_init__(self):
        self.index = {w: i for i, w in enumerate(self.words)}

    def __contains__(self, word: str) -> bool:
        return word in self.index

    def cosine(self, a: str, b: str) -> float:
        """Cosine similarity of two words' vectors (0 when either is unknown)."""
        if a not in self.index or b not in self.index:
            return 0.0
        u, v = self.vectors[self.index[a]], self.vectors[self.index[b]]
        return float(torch.nn.functional.cosine_similarity(u, v, dim=0))

    def sentence(self, text: str) -> torch.Tensor:
        """Mean vector of a text's known words (zeros when none is known)."""
        rows = [self.index[w] for w in text.split() if w in self.index]
        if not rows:
            return torch.zeros(self.vectors.shape[1], dtype=self.vectors.dtype)
        return self.vectors[rows].mean(0)


def word_vectors(texts=None, *, dim: int = 8, window: int = 2) -> WordVectors:
    """Embeddings trained on `texts` (the training corpus by default) in a second or so:
    co-occurrence counts within `window` words, positive pointwise mutual information, and the
    first `dim` singular vectors scaled by the square root of their singular values.

    The SVD runs in float64 on the CPU; a singular vector's sign is arbitrary, which changes no
    cosine similarity. Distributional vectors put antonyms close too ("good" and "bad" fill the
    same slots, cosine about 0.8 here): the reason `synonym_table` takes its candidates from the
    project's synonym groups and uses the vectors only to score them, as TextFooler takes
    counter-fitted vectors rather than plain ones.
    """
    if texts is None:
        texts = sentiment_corpus("train")[0]
    check_positive(dim, "dim", integer=True)
    check_positive(window, "window", integer=True)
    words = sorted({w for t in texts for w in t.split()})
    if dim > len(words):
        raise ValueError(f"dim must be <= the number of distinct words ({len(words)}), got {dim}")
    index = {w: i for i, w in enumerate(words)}
    counts = torch.zeros(len(words), len(words), dtype=torch.float64)
    for text in texts:
        ids = [index[w] for w in text.split()]
        for i, a in enumerate(ids):
            for b in ids[max(0, i - window):i]:
                counts[a, b] += 1
                counts[b, a] += 1
    total = counts.sum()
    row = counts.sum(1, keepdim=True)
    pmi = torch.log(counts * total / (row * row.T)).nan_to_num(neginf=0.0, nan=0.0)
    u, s, _ = torch.linalg.svd(pmi.clamp(min=0))
    return WordVectors(words, u[:, :dim] * s[:dim].sqrt())


def synonym_table(vectors: WordVectors | None = None) -> dict[str, list[tuple[str, float]]]:
    """Each word of `SYNONYM_GROUPS` -> its synonyms with their cosine similarity in `vectors`
    (`word_vectors()` by default), most similar first."""
    vectors = word_vectors() if vectors is None else vectors
    table = {}
    for group in SYNONYM_GROUPS:
        for word in group:
            pairs = [(s, vectors.cosine(word, s)) for s in group if s != word]
            table[word] = sorted(pairs, key=lambda p: (-p[1], p[0]))
    return table

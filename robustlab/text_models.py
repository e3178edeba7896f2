"""Small text classifiers for the sentiment corpus of `robustlab.text_data`, and their seeded
training: a word-level CNN, a word-level GRU and a character-level CNN (the target of typo and
character-flip attacks). Each trains in a few seconds on a CPU.

All three follow the embedding-model protocol of `robustlab.tokens` (``embed(ids)``,
``forward_embeds(e)``, ``forward(ids)``, an integer ``vocab``), so HotFlip can take gradients
with respect to the embeddings and `embedding_pgd` applies to them as well. `train_text_model`
retrains one from its seed in seconds, with the same weights each time; the zoo stores each, trained
with seed 0, beside its recipe (`robustlab.zoo_beyond`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_choice, check_positive, check_seed
from ._model import correct, model_device
from .text_data import CharTokenizer, WordTokenizer, char_tokenizer, sentiment_corpus, word_tokenizer
from .tokens import check_token_ids
from .train import fit

__all__ = ["CharCNN", "WordCNN", "WordGRU", "text_accuracy", "train_text_model"]


class _Embedded(nn.Module):
    """The protocol's ``embed`` and ``forward``; subclasses define ``forward_embeds``."""

    def __init__(self, vocab: int, dim: int):
        super().__init__()
        check_positive(vocab, "vocab", integer=True)
        check_positive(dim, "dim", integer=True)
        self.vocab = vocab
        self.embedding = nn.Embedding(vocab, dim, padding_idx=0)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Embeddings (N, L, dim) of token ids (N, L)."""
        return self.embedding(check_token_ids(ids, self.vocab, check_range=False))

    def _check_embeds(self, e: torch.Tensor) -> None:
        if e.dim() != 3 or e.shape[2] != self.embedding.embedding_dim:
            raise ValueError(f"embeds must have shape (N, L, {self.embedding.embedding_dim}), "
                             f"got {tuple(e.shape)}")

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.forward_embeds(self.embed(ids))


class WordCNN(_Embedded):
    """Kim (EMNLP 2014) in miniature: word embeddings -> convolutions of widths 2 and 3 ->
    ReLU -> max over positions -> linear. Width 3 sees "not very good" at once."""

    def __init__(self, vocab: int, dim: int = 32, channels: int = 32, num_classes: int = 2):
        super().__init__(vocab, dim)
        check_positive(channels, "channels", integer=True)
        self.convs = nn.ModuleList(nn.Conv1d(dim, channels, k) for k in (2, 3))
        self.head = nn.Linear(2 * channels, num_classes)

    def forward_embeds(self, e: torch.Tensor) -> torch.Tensor:
        self._check_embeds(e)
        h = e.transpose(1, 2)
        return self.head(torch.cat([F.relu(conv(h)).amax(2) for conv in self.convs], 1))


class WordGRU(_Embedded):
    """A GRU over word embeddings, read from the last position to the first, so that the right
    padding comes first and the final state is the one after the sentence's first word (no
    lengths needed: ``forward(ids) == forward_embeds(embed(ids))``) -> linear."""

    def __init__(self, vocab: int, dim: int = 32, hidden: int = 48, num_classes: int = 2):
        super().__init__(vocab, dim)
        check_positive(hidden, "hidden", integer=True)
        self.gru = nn.GRU(dim, hidden, batch_first=True)
        self.head = nn.Linear(hidden, num_classes)

    def forward_embeds(self, e: torch.Tensor) -> torch.Tensor:
        self._check_embeds(e)
        _, h = self.gru(e.flip(1))
        return self.head(h[-1])


class CharCNN(_Embedded):
    """Characters -> embeddings -> three convolutions (width 5, 5, 3) with max pooling by 2
    between them (a receptive field of about 24 characters: "was not really good") -> max over
    positions -> linear (after Zhang, Zhao and LeCun, NIPS 2015, in miniature)."""

    def __init__(self, vocab: int, dim: int = 16, channels: int = 64, num_classes: int = 2):
        super().__init__(vocab, dim)
        check_positive(channels, "channels", integer=True)
        self.conv1 = nn.Conv1d(dim, channels, 5, padding=2)
        self.conv2 = nn.Conv1d(channels, channels, 5, padding=2)
        self.conv3 = nn.Conv1d(channels, channels, 3, padding=1)
        self.head = nn.Linear(channels, num_classes)

    def forward_embeds(self, e: torch.Tensor) -> torch.Tensor:
        self._check_embeds(e)
        h = F.max_pool1d(F.relu(self.conv1(e.transpose(1, 2))), 2)
        h = F.max_pool1d(F.relu(self.conv2(h)), 2)
        return self.head(F.relu(self.conv3(h)).amax(2))


ARCHITECTURES = {"word-cnn": (WordCNN, word_tokenizer), "word-gru": (WordGRU, word_tokenizer),
                 "char-cnn": (CharCNN, char_tokenizer)}
EPOCHS = {"word-cnn": 8, "word-gru": 10, "char-cnn": 8}


def train_text_model(arch: str, *, seed: int = 0, epochs: int | None = None, lr: float = 3e-3,
                     batch_size: int = 64, device: str | torch.device | None = None
                     ) -> tuple[nn.Module, WordTokenizer | CharTokenizer]:
    """Train `arch` ("word-cnn", "word-gru" or "char-cnn") on the corpus's training split;
    return ``(model, tokenizer)``, the model in eval mode on `device` (the CPU by default).

    `seed` fixes the initial weights (drawn under a forked global RNG, so the caller's stream is
    untouched) and the batch order: the same seed gives the same weights. Adam (`lr` 3e-3 and
    `batch_size` 64 by default), `epochs` from `EPOCHS` by default; each takes seconds on a CPU.
    The zoo stores these models with their recipes (`robustlab.zoo_beyond`).
    """
    check_choice(arch, tuple(ARCHITECTURES), "arch")
    check_seed(seed)
    epochs = EPOCHS[arch] if epochs is None else check_positive(epochs, "epochs", integer=True)
    check_positive(lr, "lr")
    check_positive(batch_size, "batch_size", integer=True)
    cls, make_tokenizer = ARCHITECTURES[arch]
    tokenizer = make_tokenizer()
    texts, labels = sentiment_corpus("train")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(tokenizer.vocab)
    device = torch.device("cpu") if device is None else torch.device(device)
    model.to(device)
    fit(model, (tokenizer.encode(texts).to(device), labels.to(device)), epochs=epochs, lr=lr,
        batch_size=batch_size, seed=seed, progress=False, device=device)
    return model.eval(), tokenizer


def text_accuracy(model: nn.Module, tokenizer, texts, y: torch.Tensor) -> float:
    """Accuracy of `model` on `texts` (encoded by `tokenizer`) against labels `y`."""
    ids = tokenizer.encode(texts).to(model_device(model) or y.device)
    return correct(model, ids, y.to(ids.device)).float().mean().item()

"""The generated sentiment corpus, its tokenisers, word vectors and synonym table; the text
models train to a stated accuracy band for seeds 0-2, natively and on a generic CPU."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from robustlab.text_data import (
    SYNONYM_GROUPS,
    all_words,
    char_tokenizer,
    sentiment_corpus,
    synonym_table,
    word_tokenizer,
    word_vectors,
)
from robustlab.text_models import CharCNN, WordCNN, WordGRU, text_accuracy, train_text_model

from .conftest import snapshot


def test_corpus_size_balance_and_splits():
    texts, y = sentiment_corpus("all")
    assert len(texts) == 2400 and y.sum() == 1200 and y.dtype == torch.long
    assert len(set(texts)) > 2200  # varied, few repeats
    train, test = sentiment_corpus("train"), sentiment_corpus("test")
    assert train[0] + test[0] == texts and torch.equal(torch.cat([train[1], test[1]]), y)
    assert len(test[0]) == 600 and abs(test[1].float().mean() - 0.5) < 0.06
    vocabulary = {w for t in texts for w in t.split()}
    assert vocabulary <= set(all_words()) and len(vocabulary) > 100
    assert any(" not " in t for t in texts) and any("never" in t for t in texts)


def test_corpus_is_seeded():
    (a, ya), (b, yb) = sentiment_corpus("all", seed=3), sentiment_corpus("all", seed=3)
    assert a == b and torch.equal(ya, yb)
    assert sentiment_corpus("all", seed=3)[0] != sentiment_corpus("all", seed=4)[0]
    texts, _ = sentiment_corpus("train", n=8, seed=1)
    assert len(texts) == 6


def test_labels_follow_the_adjective_and_negation():
    positive = {w for g in SYNONYM_GROUPS[:6] for w in g}
    texts, y = sentiment_corpus("all", n=400)
    for text, label in zip(texts, y.tolist()):
        words = text.split()
        adjective = next(w for w in reversed(words) if w in positive or
                         any(w in g for g in SYNONYM_GROUPS[6:12]))
        negated = "not" in words or "never" in words
        assert label == ((adjective in positive) != negated), text


def test_tokenizers_round_trip_and_unknowns():
    words, chars = word_tokenizer(), char_tokenizer()
    texts = sentiment_corpus("test")[0][:20]
    assert words.decode(words.encode(texts)) == texts
    assert chars.decode(chars.encode(texts)) == texts
    ids = words.encode(["the movie was terrib1e"])
    assert ids.shape == (1, 24) and ids[0, 3] == words.UNK and ids[0, 4:].eq(0).all()
    assert chars.encode(["a#"])[0, 1] == chars.UNK
    with pytest.raises(ValueError, match=r"texts\[0\] has 25 tokens"):
        words.encode([" ".join(["good"] * 25)])
    with pytest.raises(TypeError, match="texts must be a non-empty list of strings"):
        words.encode("good")


def test_word_vectors_and_synonym_table():
    vectors = word_vectors()
    assert vectors.vectors.shape == (len(vectors.words), 8)
    assert torch.equal(vectors.vectors.abs(), word_vectors().vectors.abs())
    table = synonym_table(vectors)
    assert set(table) == {w for g in SYNONYM_GROUPS for w in g}
    for word, pairs in table.items():
        assert pairs and all(-1 <= c <= 1 for _, c in pairs)
        assert [c for _, c in pairs] == sorted((c for _, c in pairs), reverse=True)
        assert pairs[0][1] == pytest.approx(vectors.cosine(word, pairs[0][0]))
    # most synonyms stay above TextFooler's threshold of 0.5
    cosines = [c for pairs in table.values() for _, c in pairs]
    assert sum(c >= 0.5 for c in cosines) / len(cosines) > 0.6
    assert vectors.cosine("good", "unseen-word") == 0.0


@pytest.mark.parametrize("call, error, match", [
    (lambda: sentiment_corpus("dev"), ValueError, "split must be one of"),
    (lambda: sentiment_corpus(n=0), ValueError, "n must be > 0"),
    (lambda: sentiment_corpus(n=3), ValueError, "n must be >= 4"),
    (lambda: sentiment_corpus(test_fraction=1.0), ValueError, "test_fraction must lie in"),
    (lambda: word_vectors(dim=1000), ValueError, "dim must be <="),
    (lambda: train_text_model("bert"), ValueError, "arch must be one of"),
    (lambda: train_text_model("word-cnn", seed=-1), ValueError, "seed must lie in"),
    (lambda: WordCNN(0), ValueError, "vocab must be > 0"),
])
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("cls", [WordCNN, WordGRU, CharCNN])
def test_models_follow_the_embedding_protocol(cls):
    torch.manual_seed(0)
    model = cls(40).eval()
    ids = torch.randint(0, 40, (3, 24))
    assert torch.allclose(model(ids), model.forward_embeds(model.embed(ids)))
    assert model(ids).shape == (3, 2)


# test accuracy of each model for seeds 0 / 1 / 2, measured: word-cnn 0.92 / 0.86 / 0.89 (it
# cannot see a "not" five words before the adjective: "i did not think the plot was good"),
# word-gru 0.995 / 1.0 / 0.997, char-cnn 0.98 / 0.93 / 1.0
BANDS = {"word-cnn": 0.8, "word-gru": 0.95, "char-cnn": 0.88}


def _accuracies(seed: int) -> dict:
    texts, y = sentiment_corpus("test")
    return {arch: text_accuracy(*train_text_model(arch, seed=seed), texts, y) for arch in BANDS}


# seeds 1 and 2 and the generic CPU take about a minute each: the matrix (make check) runs them
@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.matrix),
                                  pytest.param(2, marks=pytest.mark.matrix)])
def test_models_train_to_their_band(seed):
    accuracy = _accuracies(seed)
    assert all(accuracy[a] >= BANDS[a] for a in BANDS), accuracy


@pytest.mark.matrix
def test_models_train_to_their_band_on_generic_cpu():
    code = "from tests.test_text_data import _accuracies; print(_accuracies(0))"
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, cwd=Path(__file__).parents[1])
    accuracy = eval(out.stdout)  # a dict of floats we printed ourselves
    assert all(accuracy[a] >= BANDS[a] for a in BANDS), accuracy


def test_training_is_seeded():
    a, _ = train_text_model("word-cnn", seed=1, epochs=1)
    b, _ = train_text_model("word-cnn", seed=1, epochs=1)
    state = snapshot(a)["state"]
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in state.items())

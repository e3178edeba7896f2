"""The text attacks: HotFlip, TextBugger, synonym substitution, their metrics and result.

The models are trained once per module (seed 0, seconds each); success-rate bands are the
measured rates with margin (see the comments beside them).
"""

import functools

import pytest
import torch
from torch import nn

from robustlab.attacks import (
    DISTRACTORS,
    TextAttackResult,
    add_sentence,
    edit_distance,
    embedding_cosine,
    hotflip,
    hotflip_scores,
    synonym_attack,
    text_similarity,
    text_transfer,
    textbugger,
    word_overlap,
)
from robustlab.losses import margin_loss
from robustlab.text_data import (
    CharTokenizer,
    WordVectors,
    sentiment_corpus,
    synonym_table,
    word_tokenizer,
    word_vectors,
)
from robustlab.zoo_beyond import stored_or_trained
from tests.syncs import explain, grows

from ..conftest import leaves_as_found, seeded

N = 120  # test sentences attacked


@functools.cache
def _setup():
    texts, y = sentiment_corpus("test")
    models = {arch: stored_or_trained(f"sentiment-{arch}", seed=0)  # the zoo's: trained with seed 0
              for arch in ("word-cnn", "word-gru", "char-cnn")}
    return texts[:N], y[:N], models, word_vectors()


@pytest.fixture(scope="module")
def setup():
    return _setup()


def _fooled(model, tokenizer, texts, y):
    with torch.no_grad():
        return model(tokenizer.encode(texts)).argmax(1) != y


def _check_successes(result, model, tokenizer, y):
    """Every success is really misclassified, and was classified right before."""
    assert isinstance(result, TextAttackResult)
    fooled = _fooled(model, tokenizer, result.adversarial, y)
    clean = ~_fooled(model, tokenizer, result.original, y)
    assert torch.equal(result.success, fooled & clean)
    assert torch.equal(result.clean, clean)
    for i in (~clean).nonzero()[:, 0].tolist():  # the already wrong are left alone
        assert result.adversarial[i] == result.original[i]
    assert set(result.similarity) == {"edit_distance", "word_edits", "word_overlap", "cosine"}


# ---- HotFlip ---------------------------------------------------------------------------------

class LinearChars(nn.Module):
    """Embedding followed by one linear layer on the flattened embeddings: the margin loss of
    two classes is linear in the embeddings, so HotFlip's first-order estimate is exact."""

    def __init__(self, vocab=10, dim=3, length=6):
        super().__init__()
        self.vocab = vocab
        g = torch.Generator().manual_seed(0)
        self.embedding = nn.Embedding(vocab, dim)
        self.linear = nn.Linear(dim * length, 2)
        with torch.no_grad():
            self.embedding.weight.copy_(torch.randn(vocab, dim, generator=g))
            self.linear.weight.copy_(torch.randn(2, dim * length, generator=g))

    def embed(self, ids):
        return self.embedding(ids)

    def forward_embeds(self, e):
        return self.linear(e.flatten(1))

    def forward(self, ids):
        return self.forward_embeds(self.embed(ids))


def test_hotflip_scores_are_the_true_loss_change_of_a_linear_model():
    model = LinearChars().double()
    ids = torch.randint(0, 10, (3, 6), generator=seeded())
    y = torch.tensor([0, 1, 1])
    scores = leaves_as_found(lambda: hotflip_scores(model, ids, y, loss="margin"), model, ids, y)
    assert scores.shape == (3, 6, 10)
    with torch.no_grad():
        base = margin_loss(model(ids), y)
        for i in range(6):
            for b in range(10):
                flipped = ids.clone()
                flipped[:, i] = b
                true = margin_loss(model(flipped), y) - base
                assert torch.allclose(scores[:, i, b], true, atol=1e-10), (i, b)


def test_hotflip_scores_point_uphill_on_the_char_model(setup):
    """With the cross-entropy the estimate is first order only; still, the flip it rates best
    raises the true loss of most texts."""
    texts, y, models, _ = setup
    model, tokenizer = models["char-cnn"]
    ids, y8 = tokenizer.encode(texts[:8]), y[:8]
    scores = hotflip_scores(model, ids, y8)
    assert torch.isfinite(scores).all() and scores.gather(2, ids[..., None]).eq(0).all()
    letters = torch.zeros(tokenizer.vocab, dtype=torch.bool)
    letters[[tokenizer.index[c] for c in "abcdefghijklmnopqrstuvwxyz"]] = True
    best = scores.masked_fill(~(letters[ids][..., None] & letters), -torch.inf).flatten(1).argmax(1)
    flipped = ids.clone()
    flipped[torch.arange(8), best // tokenizer.vocab] = best % tokenizer.vocab
    with torch.no_grad():
        ce = nn.functional.cross_entropy
        gain = ce(model(flipped), y8, reduction="none") - ce(model(ids), y8, reduction="none")
    assert (gain > 0).sum() >= 6, gain


def test_hotflip_flips_the_char_model_within_its_budget(setup):
    texts, y, models, vectors = setup
    model, tokenizer = models["char-cnn"]
    result = leaves_as_found(lambda: hotflip(model, texts, y, tokenizer=tokenizer, budget=3,
                                             vectors=vectors), model, y)
    _check_successes(result, model, tokenizer, y)
    # measured (200 sentences, seeds 0 / 1 / 2): 0.97 / 1.0 / 1.0, 1.27-1.43 flips per success
    assert result.success_rate >= 0.8, result.table()
    for a, b, s, e in zip(result.original, result.adversarial, result.success.tolist(),
                          result.edits.tolist()):
        assert len(a) == len(b) and edit_distance(a, b) <= e <= 3
        assert all(c == d or (c.isalpha() and d.isalpha()) for c, d in zip(a, b))
        assert e > 0 or not s
    assert "hotflip" in result.table() and "<= 3 flipped characters" in result.table()


def test_hotflip_budget_one_and_determinism(setup):
    texts, y, models, _ = setup
    model, tokenizer = models["char-cnn"]
    one = hotflip(model, texts[:40], y[:40], tokenizer=tokenizer, budget=1, beam=2)
    again = hotflip(model, texts[:40], y[:40], tokenizer=tokenizer, budget=1, beam=2)
    assert one.adversarial == again.adversarial
    assert all(edit_distance(a, b) <= 1 for a, b in zip(one.original, one.adversarial))


def test_hotflip_has_no_host_syncs_in_its_loop(setup):
    texts, y, models, _ = setup
    model, tokenizer = models["char-cnn"]
    small, large = grows(lambda b: hotflip(model, texts[:8], y[:8], tokenizer=tokenizer, budget=b),
                         1, 4)
    assert small.total == large.total, explain(small, large)


class Constant(nn.Module):
    """A word model that ignores its input: nothing fools it, so a search runs every round."""

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.tensor([1.0, 0.0]))

    def forward(self, ids):
        return self.bias.expand(len(ids), 2) + 0 * ids[:, :1]


@pytest.mark.parametrize("attack", ["textbugger", "synonym"])
def test_black_box_searches_read_once_per_round_not_per_query(attack):
    """The searches over strings read the scores back once per round of queries (a round per
    word position), whatever the number of texts and candidates: a text of k words costs a
    fixed number of reads per word, the same for 4 texts as for 16."""
    tokenizer, model = word_tokenizer(), Constant()

    def run(n, k):
        texts = [" ".join(["good"] * k)] * n
        y = torch.zeros(n, dtype=torch.long)
        if attack == "textbugger":
            return textbugger(model, texts, y, tokenizer=tokenizer, generator=seeded())
        return synonym_attack(model, texts, y, tokenizer=tokenizer, min_similarity=-1.0)

    few, many = grows(lambda n: run(n, 6), 4, 16)
    assert few.total == many.total, explain(few, many)
    short, long = grows(lambda k: run(4, k), 3, 6)
    per_round = (long.total - short.total) / 3
    assert per_round == int(per_round) <= 2, explain(short, long)


# ---- TextBugger ------------------------------------------------------------------------------

@pytest.mark.parametrize("arch, band", [("char-cnn", 0.5), ("word-cnn", 0.85)])
def test_textbugger_within_its_word_budget(setup, arch, band):
    """Measured (200 sentences, seeds 0 / 1 / 2): 0.64 / 0.72 / 0.47 on the char CNN, 0.995 /
    0.91 / 0.91 on the word CNN, where a bugged word becomes the unknown id."""
    texts, y, models, vectors = setup
    model, tokenizer = models[arch]
    kept = list(texts)
    result = leaves_as_found(lambda: textbugger(model, texts, y, tokenizer=tokenizer,
                                                max_words=3, generator=seeded(), vectors=vectors),
                             model, y)
    _check_successes(result, model, tokenizer, y)
    assert result.success_rate >= band, result.table()
    assert (result.edits <= 3).all() and texts == kept  # the caller's list untouched
    # one edit per bugged word: an insertion, deletion or look-alike is 1, a swap 2
    for a, b, e in zip(result.original, result.adversarial, result.edits.tolist()):
        assert edit_distance(a, b) <= 2 * e
    again = textbugger(model, texts, y, tokenizer=tokenizer, generator=seeded())
    assert again.adversarial == result.adversarial


def test_textbugger_bug_kinds():
    """Each bug alone, on a model that only likes the word "good": the bug must break it."""
    tokenizer = word_tokenizer()

    class LikesGood(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(tokenizer.vocab))
            with torch.no_grad():
                self.w[tokenizer.index["good"]] = 5.0

        def forward(self, ids):
            s = self.w[ids].sum(1) - 1
            return torch.stack([-s, s], 1)

    model, y = LikesGood(), torch.tensor([1])
    expected = {"insert": ["go od", "goo d", "g ood"], "delete": ["god"], "swap": ["good"],
                "visual": ["g0od", "go0d"]}
    for bug, words in expected.items():
        result = textbugger(model, ["the movie was good"], y, tokenizer=tokenizer, bugs=(bug,),
                            generator=seeded())
        last = result.adversarial[0].split(" ", 3)[3]
        if bug == "swap":  # "good" swapped inside is "good" again: no change, no success
            assert not result.success[0] and result.edits[0] == 0
        else:
            assert result.success[0] and last in words, (bug, result.adversarial)


# ---- synonym substitution --------------------------------------------------------------------

@pytest.mark.parametrize("arch, band", [("word-cnn", (0.1, 0.6)), ("word-gru", (0.0, 0.3))])
def test_synonym_attack_respects_its_threshold(setup, arch, band):
    """Measured (200 sentences, seeds 0 / 1 / 2): 0.28 / 0.36 / 0.44 on the word CNN, 0.08 /
    0.11 / 0.07 on the GRU."""
    texts, y, models, vectors = setup
    model, tokenizer = models[arch]
    table = synonym_table(vectors)
    result = leaves_as_found(lambda: synonym_attack(model, texts, y, tokenizer=tokenizer,
                                                    min_similarity=0.5, vectors=vectors),
                             model, y)
    _check_successes(result, model, tokenizer, y)
    assert band[0] <= result.success_rate <= band[1], result.table()
    for a, b, e in zip(result.original, result.adversarial, result.edits.tolist()):
        wa, wb = a.split(), b.split()
        changed = [(u, v) for u, v in zip(wa, wb) if u != v]
        assert len(wa) == len(wb) and len(changed) == e
        for u, v in changed:
            assert dict(table[u])[v] >= 0.5, (u, v)


def test_synonym_attack_threshold_and_budget(setup):
    texts, y, models, vectors = setup
    model, tokenizer = models["word-cnn"]
    loose = synonym_attack(model, texts, y, tokenizer=tokenizer, min_similarity=-1.0)
    strict = synonym_attack(model, texts, y, tokenizer=tokenizer, min_similarity=0.5)
    none = synonym_attack(model, texts, y, tokenizer=tokenizer, min_similarity=1.0)
    assert loose.success_rate >= strict.success_rate >= none.success_rate == 0.0
    one = synonym_attack(model, texts, y, tokenizer=tokenizer, min_similarity=-1.0, max_words=1)
    assert (one.edits <= 1).all() and "<= 1 words" in one.constraint


def test_transfer_between_word_models(setup):
    """Measured at cosine >= 0.5 (200 sentences, seeds 0 / 1 / 2): CNN -> GRU 0.04 / 0.03 / 0.01,
    GRU -> CNN 0.54 / 0.43 / 0.50: what fools the GRU mostly fools the CNN, not the reverse."""
    texts, y, models, vectors = setup
    (cnn, tokenizer), (gru, _) = models["word-cnn"], models["word-gru"]
    result = synonym_attack(cnn, texts, y, tokenizer=tokenizer, min_similarity=0.5)
    rate = text_transfer(result, gru, y, tokenizer=tokenizer)
    assert 0.0 <= rate <= 0.3
    assert text_transfer(result, cnn, y, tokenizer=tokenizer) == 1.0  # its own successes


# ---- distracting sentences ------------------------------------------------------------------

@pytest.mark.parametrize("arch, band", [("word-cnn", 0.15), ("char-cnn", 0.25)])
def test_add_sentence_appends_one_off_topic_clause(setup, arch, band):
    """Measured (seed 0, 200 sentences): word CNN 0.35, GRU 0.15, char CNN 0.52; seeds 1 and 2:
    0.56 / 0.83 / 0.54 and 0.43 / 0.36 / 0.75: no model here reads past an off-topic clause."""
    texts, y, models, vectors = setup
    model, tokenizer = models[arch]
    result = leaves_as_found(lambda: add_sentence(model, texts, y, tokenizer=tokenizer,
                                                  vectors=vectors), model, y)
    _check_successes(result, model, tokenizer, y)
    assert result.success_rate >= band, result.table()
    for a, b, clean in zip(result.original, result.adversarial, result.clean.tolist()):
        if clean:
            assert b.startswith(a + " ") and b[len(a) + 1:] in DISTRACTORS
    assert (result.edits == result.clean.long()).all()


def test_add_sentence_skips_clauses_too_long_for_the_tokenizer(setup):
    texts, y, models, _ = setup
    model, tokenizer = models["word-cnn"]
    long = " ".join(["good"] * 20)
    result = add_sentence(model, [long], y[:1].fill_(1), tokenizer=tokenizer)
    assert result.adversarial == [long] and result.edits.tolist() == [0]
    with pytest.raises(TypeError, match="distractors must be"):
        add_sentence(model, texts[:1], y[:1], tokenizer=tokenizer, distractors="and so on")


# ---- metrics and result ----------------------------------------------------------------------

def test_edit_distance_analytic_cases():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("", "abc") == edit_distance("abc", "") == 3
    assert edit_distance("terrible", "terrib1e") == 1
    assert edit_distance("weak", "we ak") == 1
    assert edit_distance("terrible", "terrbile") == 2  # a swap is two substitutions
    assert edit_distance("same", "same") == 0
    assert edit_distance("a b c".split(), "a x c d".split()) == 2
    with pytest.raises(TypeError, match="two strings or two lists"):
        edit_distance("a", 3)


def test_word_overlap_and_cosine_analytic_cases():
    assert word_overlap("a b c", "a b d") == pytest.approx(2 / 3)
    assert word_overlap("a a b", "a b b") == pytest.approx(2 / 3)
    assert word_overlap("a b", "a b") == word_overlap("", "") == 1.0
    assert word_overlap("a b", "c d") == 0.0
    assert word_overlap("a b c d", "a b") == 0.5
    vectors = WordVectors(["x", "y", "z"], torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]))
    assert embedding_cosine("x", "x y", vectors) == pytest.approx(2 ** -0.5)
    assert embedding_cosine("x", "z", vectors) == pytest.approx(-1.0)
    assert embedding_cosine("x", "unknown", vectors) == 0.0
    sim = text_similarity(["x b"], ["x c"], vectors)  # unknown words: no vector
    assert sim == {"edit_distance": [1], "word_edits": [1], "word_overlap": [0.5], "cosine": [1.0]}
    with pytest.raises(ValueError, match="differ in length"):
        text_similarity(["a"], [])


def test_result_table_and_examples(setup):
    texts, y, models, vectors = setup
    model, tokenizer = models["word-cnn"]
    result = textbugger(model, texts[:20], y[:20], tokenizer=tokenizer, generator=seeded(),
                        vectors=vectors)
    table = result.table()
    assert table.startswith("| attack | constraint | clean | success rate | edits |")
    assert str(result) == table and result._repr_markdown_() == table
    summary = result.summary()
    assert summary["success rate"] == result.success_rate
    assert "| original | adversarial |" in result.examples(2)


def test_attacks_work_inside_no_grad(setup):
    texts, y, models, _ = setup
    model, tokenizer = models["char-cnn"]
    with torch.no_grad():
        result = hotflip(model, texts[:8], y[:8], tokenizer=tokenizer, budget=1)
    assert len(result.adversarial) == 8


# ---- bad input -------------------------------------------------------------------------------

def test_bad_input(setup):
    texts, y, models, _ = setup
    char, chars = models["char-cnn"]
    word, words = models["word-cnn"]
    cases = [
        (lambda: hotflip(char, texts[:2], y[:2], tokenizer=None), TypeError, "tokenizer must be"),
        (lambda: hotflip(word, texts[:2], y[:2], tokenizer=words), TypeError,
         "tokenizer must be a CharTokenizer"),
        (lambda: hotflip(char, ["abc"], y[:1], tokenizer=CharTokenizer("abc", 10)), ValueError,
         r"model.vocab \(43\) must equal the tokenizer's vocab \(5\)"),
        (lambda: textbugger(word, texts[:2], y[:2], tokenizer=None), TypeError,
         "tokenizer must be"),
        (lambda: hotflip(char, texts[:2], y[:3], tokenizer=chars), ValueError, "y has 3 labels"),
        (lambda: hotflip(char, "a text", y[:1], tokenizer=chars), TypeError, "texts must be"),
        (lambda: hotflip(char, texts[:2], y[:2].float(), tokenizer=chars), TypeError, "y must be"),
        (lambda: hotflip(char, texts[:2], y[:2], tokenizer=chars, budget=0), ValueError,
         "budget must be > 0"),
        (lambda: hotflip(char, texts[:2], y[:2], tokenizer=chars, beam=1.5), TypeError,
         "beam must be an int"),
        (lambda: hotflip(char, texts[:2], y[:2], tokenizer=chars, loss="dlr"), ValueError,
         "loss must be one of"),
        (lambda: hotflip(nn.Linear(2, 2), texts[:2], y[:2], tokenizer=chars), TypeError,
         "embedding model"),
        (lambda: hotflip_scores(char, chars.encode(texts[:2]), y[:3]), ValueError, "y must have"),
        (lambda: textbugger(word, texts[:2], y[:2], tokenizer=words, bugs=("typo",)), ValueError,
         "bugs must be"),
        (lambda: textbugger(word, texts[:2], y[:2], tokenizer=words, max_words=0), ValueError,
         "max_words must be > 0"),
        (lambda: textbugger(word, texts[:2], y[:2], tokenizer=words, generator=0), TypeError,
         "generator must be"),
        (lambda: synonym_attack(word, texts[:2], y[:2], tokenizer=words, min_similarity=2),
         ValueError, "min_similarity must lie in"),
        (lambda: synonym_attack(word, texts[:2], y[:2], tokenizer=words, synonyms=[]), TypeError,
         "synonyms must be a dict"),
        (lambda: text_transfer(None, word, y, tokenizer=words), TypeError, "result must be"),
        (lambda: embedding_cosine("a", "b", None), TypeError, "vectors must be"),
    ]
    for call, error, match in cases:
        with pytest.raises(error, match=match):
            call()

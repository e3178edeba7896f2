"""The generated token task and the embedding model of robustlab.tokens."""

import pytest
import torch

from robustlab.tokens import NEGATIVE, NOT, POSITIVE, TokenCNN, check_token_ids, token_task


def rule(seq):
    """The task's label, read token by token: +-1 per keyword, flipped right after "not"."""
    score = 0
    for p, t in enumerate(seq):
        s = 1 if t in POSITIVE else -1 if t in NEGATIVE else 0
        score += -s if p > 0 and seq[p - 1] == NOT else s
    return score


@pytest.mark.parametrize("seed", [0, 1])
def test_labels_follow_the_rule(seed):
    ids, y = token_task(600, seq_len=12, vocab=20, seed=seed)
    assert ids.shape == (600, 12) and ids.dtype == torch.long and y.dtype == torch.long
    assert ids.min() >= 0 and ids.max() < 20
    scores = [rule(s) for s in ids.tolist()]
    assert all(abs(s) in (1, 3) for s in scores)  # one or three keywords, never a tie
    assert y.tolist() == [int(s > 0) for s in scores]
    keywords = torch.isin(ids, torch.tensor(POSITIVE + NEGATIVE)).sum(1)
    assert set(keywords.tolist()) == {1, 3}
    assert 0.4 < y.float().mean() < 0.6
    negated = sum(1 for s in ids.tolist() for p in range(1, 12)
                  if s[p - 1] == NOT and (s[p] in POSITIVE or s[p] in NEGATIVE))
    idle = int((ids == NOT).sum()) - negated
    assert negated > 50 and idle > 50  # negations that matter and negations that do not


def test_same_seed_same_data():
    a, b, c = token_task(50, seed=3), token_task(50, seed=3), token_task(50, seed=4)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    no_negation, _ = token_task(200, seed=0, negation=0.0)
    assert not (no_negation == NOT).any()


def test_token_cnn_protocol():
    torch.manual_seed(0)
    model = TokenCNN(vocab=20, dim=4, channels=6, num_classes=3)
    ids, _ = token_task(8, vocab=20)
    e = model.embed(ids)
    assert e.shape == (8, 16, 4)
    assert torch.equal(model(ids), model.forward_embeds(e))
    assert torch.equal(model(embeds=e), model.forward_embeds(e))
    assert model(ids).shape == (8, 3)
    with pytest.raises(ValueError, match="exactly one"):
        model(ids, embeds=e)
    with pytest.raises(ValueError, match="exactly one"):
        model()
    with pytest.raises(ValueError, match="embeds"):
        model.forward_embeds(e[..., :3])


@pytest.mark.parametrize("kwargs, arg", [
    (dict(n=0), "n must"), (dict(n=4, seq_len=5), "seq_len"), (dict(n=4, vocab=11), "vocab"),
    (dict(n=4, negation=1.5), "negation"), (dict(n=4, negation="x"), "negation"),
    (dict(n=2.5), "n must"),
])
def test_token_task_bad_arguments(kwargs, arg):
    with pytest.raises((ValueError, TypeError), match=arg):
        token_task(**kwargs)


def test_bad_ids_and_sizes_name_the_argument():
    with pytest.raises(TypeError, match="ids"):
        check_token_ids(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="ids"):
        check_token_ids(torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"outside \[0, 5\)"):
        check_token_ids(torch.tensor([[0, 5]]), 5)
    with pytest.raises(TypeError, match="ids"):
        check_token_ids([[0, 1]])
    with pytest.raises(ValueError, match="dim"):
        TokenCNN(dim=0)

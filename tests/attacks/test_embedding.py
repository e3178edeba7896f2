"""PGD in embedding space, robustlab.attacks.embedding."""

import pytest
import torch
from torch import nn

from robustlab.attacks.embedding import embedding_pgd, embedding_robust_accuracy
from robustlab.tokens import TokenCNN, token_task

from ..conftest import leaves_as_found, seeded


class MeanLinear(nn.Module):
    """Embedding -> mean over positions -> affine: the loss's gradient wrt every position's
    embedding is the same vector, (softmax - onehot)^T W / L."""

    def __init__(self, vocab=20, dim=5, k=2):
        super().__init__()
        torch.manual_seed(0)
        self.embedding = nn.Embedding(vocab, dim).double()
        self.lin = nn.Linear(dim, k).double()

    def embed(self, ids):
        return self.embedding(ids)

    def forward_embeds(self, e):
        return self.lin(e.mean(1))

    def forward(self, ids):
        return self.forward_embeds(self.embed(ids))


def test_one_step_is_the_analytic_worst_case_of_a_mean_pooled_linear_model():
    """Two classes: grad_delta CE = (1 - p_y)(w_o - w_y) / L at every position, so the
    normalised step of length eps from 0 is eps (w_o - w_y) / (sqrt(L) ||w_o - w_y||) at
    every position, the worst case in the Frobenius ball (it lowers the margin by
    eps ||w_o - w_y|| / sqrt(L), by Cauchy-Schwarz the most any delta of norm eps can)."""
    model = MeanLinear()
    ids, y = token_task(6, seq_len=8, vocab=20)
    eps = 0.7
    e_adv = embedding_pgd(model, ids, y, eps=eps, alpha=eps, steps=1, random_start=False)
    w = model.lin.weight.detach()
    u = w[1 - y] - w[y]  # (N, d)
    expected = model.embed(ids).detach() + eps * (u / (8 ** 0.5 * u.norm(dim=1, keepdim=True)))[:, None]
    assert torch.allclose(e_adv, expected, atol=1e-12)
    # shorter steps reach it too: the direction never changes and the ball stops them there
    again = embedding_pgd(model, ids, y, eps=eps, alpha=0.3, steps=6, random_start=False)
    assert torch.allclose(again, expected, atol=1e-9)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_stays_in_the_ball_and_eps_zero_is_clean(norm):
    torch.manual_seed(0)
    model = TokenCNN(vocab=20, dim=4, channels=8)
    ids, y = token_task(32, vocab=20)
    e = model.embed(ids).detach()
    e_adv = embedding_pgd(model, ids, y, eps=0.5, alpha=0.2, steps=5, norm=norm,
                          generator=seeded())
    d = (e_adv - e).flatten(1)
    size = d.norm(dim=1) if norm == "l2" else d.abs().amax(1)
    assert (size <= 0.5 + 1e-6).all() and size.max() > 0.4
    assert torch.equal(embedding_pgd(model, ids, y, eps=0.0, alpha=0.2, steps=3, norm=norm,
                                     generator=seeded()), e)
    clean = (model(ids).argmax(1) == y).float().mean().item()
    assert embedding_robust_accuracy(model, ids, y, eps=0.0, alpha=0.1, steps=2) == clean
    robust = embedding_robust_accuracy(model, ids, y, eps=3.0, alpha=1.0, steps=10, norm=norm,
                                       generator=seeded())
    assert robust < clean


def test_leaves_the_model_as_found():
    torch.manual_seed(0)
    net = TokenCNN(vocab=20, dim=4, channels=8)
    net.add_module("drop", nn.Dropout(0.5))
    net.train()
    net.conv.bias.requires_grad_(False)
    for p in net.parameters():
        p.grad = torch.randn_like(p) if p.requires_grad else None
    ids, y = token_task(16, vocab=20)
    out = leaves_as_found(lambda: embedding_pgd(net, ids, y, eps=0.5, alpha=0.2, steps=3,
                                                generator=seeded()), net, ids, y)
    assert not out.requires_grad
    with torch.no_grad():  # works inside the caller's no_grad
        embedding_pgd(net, ids, y, eps=0.5, alpha=0.2, steps=2)


@pytest.mark.parametrize("kwargs, arg", [
    (dict(eps=-1.0), "eps"), (dict(alpha=0.0), "alpha"), (dict(steps=0), "steps"),
    (dict(norm="l1"), "norm"),
])
def test_bad_arguments_name_the_argument(kwargs, arg):
    model = TokenCNN(vocab=20)
    ids, y = token_task(4, vocab=20)
    args = dict(eps=0.5, alpha=0.1, steps=2) | kwargs
    with pytest.raises((ValueError, TypeError), match=arg):
        embedding_pgd(model, ids, y, **args)


def test_bad_models_and_inputs_name_the_argument():
    ids, y = token_task(4, vocab=20)
    with pytest.raises(TypeError, match="embed"):
        embedding_pgd(nn.Linear(3, 2), ids, y, eps=0.5, alpha=0.1, steps=1)
    with pytest.raises(TypeError, match="model"):
        embedding_pgd("model", ids, y, eps=0.5, alpha=0.1, steps=1)
    with pytest.raises(TypeError, match="ids"):
        embedding_pgd(TokenCNN(vocab=20), ids.float(), y, eps=0.5, alpha=0.1, steps=1)
    with pytest.raises(ValueError, match="y"):
        embedding_pgd(TokenCNN(vocab=20), ids, y[:2], eps=0.5, alpha=0.1, steps=1)
    with pytest.raises(ValueError, match="ids"):
        embedding_pgd(TokenCNN(vocab=20), ids + 20, y, eps=0.5, alpha=0.1, steps=1)

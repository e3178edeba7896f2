"""PGD in embedding space: the attack that FreeLB trains against, and the robust accuracy it
measures, for models that follow the embedding protocol of `robustlab.tokens`
(``model.embed(ids)``, ``model.forward_embeds(e)``).

Words are discrete, so an attack on text either swaps tokens or, as here, moves the word
embeddings themselves: e' = embed(ids) + delta with ||delta||_F <= eps per sequence (the
Frobenius norm of the (L, d) perturbation, FreeLB's ball; "linf" bounds every coordinate).
Embeddings have no box like [0, 1], so only the ball constrains delta. A perturbed embedding
need not be the embedding of any token: this measures robustness of the model's function of
its embeddings, an upper bound on what token swaps can do only in spirit.
"""

from __future__ import annotations

import torch
from torch import nn

from .._checks import check_eps, check_labels, check_logits, check_norm, check_positive
from .._model import frozen
from ..losses import ce_loss
from ..norms import project, random_in_ball, steepest
from ..tokens import check_embedding_model, check_token_ids

__all__ = ["embedding_pgd", "embedding_robust_accuracy"]


def _checked(model, ids, y, eps, alpha, steps, norm) -> tuple[torch.Tensor, torch.Tensor,
                                                              float, str]:
    check_embedding_model(model)
    ids = check_token_ids(ids, getattr(model, "vocab", None))
    y = check_labels(y, ids)
    check_positive(alpha, "alpha")
    check_positive(steps, "steps", integer=True)
    return ids, y, check_eps(eps), check_norm(norm, ("l2", "linf"))


def embedding_pgd(model: nn.Module, ids: torch.Tensor, y: torch.Tensor, *, eps: float,
                  alpha: float, steps: int, norm: str = "l2", random_start: bool = True,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Projected gradient ascent of the cross-entropy on the word embeddings; returns the
    adversarial embeddings e' (N, L, d), detached, with ||e' - embed(ids)|| <= eps per sequence.

    Madry et al.'s PGD (ICLR 2018) moved from pixels to embeddings, as FreeLB (Zhu et al.,
    ICLR 2020) evaluates it:

        delta_{t+1} = Proj_{||delta|| <= eps}(delta_t + alpha * s(grad_delta L(f(e + delta_t), y)))

    with s the normalised gradient (L2, the Frobenius norm over the whole sequence) or its sign
    (L-inf), from a uniform random point of the ball when `random_start`. The model runs in
    eval mode with its parameters frozen and is left as found.

    Arguments:
        model: an embedding model (``embed``, ``forward_embeds``; see `robustlab.tokens`).
        ids: token ids (N, L); y: labels (N,).
        eps: radius of the ball; alpha: step size; steps: number of iterations.
        generator: seeds the random start.
    """
    ids, y, eps, norm = _checked(model, ids, y, eps, alpha, steps, norm)
    with frozen(model):
        e = model.embed(ids).detach()
        delta = random_in_ball(e, eps, norm, generator) if random_start else torch.zeros_like(e)
        for step in range(steps):
            delta.requires_grad_(True)
            z = model.forward_embeds(e + delta)
            if step == 0:
                check_logits(z, len(ids))
            (g,) = torch.autograd.grad(ce_loss(z, y).sum(), delta)
            delta = project(delta.detach() + alpha * steepest(g, norm), eps, norm)
    return (e + delta).detach()


def embedding_robust_accuracy(model: nn.Module, ids: torch.Tensor, y: torch.Tensor, *,
                              eps: float, alpha: float, steps: int, norm: str = "l2",
                              random_start: bool = True,
                              generator: torch.Generator | None = None) -> float:
    """Accuracy of `model` on the embeddings `embedding_pgd` finds (eval mode), counting an
    example as robust only if it is also classified right without a perturbation (eps = 0
    gives the clean accuracy). Same arguments as `embedding_pgd`."""
    e_adv = embedding_pgd(model, ids, y, eps=eps, alpha=alpha, steps=steps, norm=norm,
                          random_start=random_start, generator=generator)
    y = y.long()
    with frozen(model), torch.no_grad():
        clean = model.forward_embeds(model.embed(ids)).argmax(1) == y
        robust = model.forward_embeds(e_adv).argmax(1) == y
    return (clean & robust).float().mean().item()

"""FreeLB: adversarial training on word embeddings with "free" large batches.

For models that follow the embedding protocol of `robustlab.tokens` (``model.embed(ids)``,
``model.forward_embeds(e)``), trained on token ids with `robustlab.train.fit`; the data are
``(ids, labels)`` pairs (`robustlab.tokens.token_task` makes a task to try it on). Measure
the result with `robustlab.attacks.embedding.embedding_robust_accuracy`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_eps, check_generator, check_logits, check_nonnegative, check_positive
from ..norms import project, random_in_ball, steepest
from ..tokens import check_embedding_model
from ..train import fit
from ._inner import _acc

__all__ = ["freelb"]


def freelb(model: nn.Module, data, *, eps: float, alpha: float, steps: int, epochs: int,
           init: float | None = None, generator: torch.Generator | None = None,
           **fit_options) -> list[dict]:
    """FreeLB, Zhu, Cheng, Gan, Sun, Goldstein and Liu, "FreeLB: enhanced adversarial training
    for natural language understanding" (ICLR 2020), Algorithm 1. Per batch of ids X with
    embeddings E = embed(X), from

        delta_0 = U(-init, init)^(L x d) / sqrt(L d),  projected onto ||delta||_F <= eps,

    for t = 1 .. K (``K = steps``), one forward and backward pass at E + delta_{t-1} gives both

        g_t = g_{t-1} + (1 / K) grad_theta L(f(E + delta_{t-1}), y)       (g_0 = 0)
        delta_t = Proj_{||delta||_F <= eps}(delta_{t-1} + alpha * g_adv / ||g_adv||_F),
                  g_adv = grad_delta L(f(E + delta_{t-1}), y),

    and one optimiser step with g_K: theta descends the loss averaged over K perturbations,
    a "free" batch K times larger, at the cost of K passes (the last delta_K is not needed and
    not computed). The ball and the normalisation are per sequence, over its whole (L, d)
    perturbation. E is recomputed each pass, so the embedding table receives the gradient of
    all K passes too. The model trains as found by `fit` (train mode, dropout on), as in the
    paper's code. With ``eps = 0`` and ``steps = 1`` it is standard training.

    Why not an Objective: the parameter gradient is the sum of K backward passes, each of which
    also gives the next perturbation, so the backward passes belong to the loop, not to `fit`
    (as YOPO's and Free-AT's in `robustlab.defences.loops`). It is `fit` with a ``step=``, so
    logging (``loss`` and ``adv_acc``, means over the K passes), ``eval_data``, schedulers,
    checkpoints and ``after_epoch`` work as there; extra keyword arguments go to `fit`.

    Arguments:
        model: an embedding model; data: ``(ids, labels)`` or an iterable of such batches.
        eps: the Frobenius radius of the ball (>= 0); alpha: the ascent step (> 0);
        steps: K, the ascent steps per batch.
        init: the magnitude sigma of the random start (default `eps`).
        generator: seeds the random starts.
    Returns `fit`'s history.
    """
    check_embedding_model(model)
    eps = check_eps(eps)
    check_positive(alpha, "alpha")
    check_positive(steps, "steps", integer=True)
    check_positive(epochs, "epochs", integer=True)
    init = eps if init is None else check_nonnegative(init, "init")
    generator = check_generator(generator)

    def step(model: nn.Module, ids: torch.Tensor, y: torch.Tensor, optimizer):
        with torch.no_grad():  # the size, dtype and device of one sequence's embeddings
            one = model.embed(ids[:1])
        start = random_in_ball(one.new_empty(len(ids), *one.shape[1:]), 1.0, "linf", generator)
        delta = project(start * (init / math.sqrt(start[0].numel())), eps, "l2")
        losses, hits = [], []
        optimizer.zero_grad(set_to_none=True)
        for t in range(steps):
            delta.requires_grad_(True)
            z = check_logits(model.forward_embeds(model.embed(ids) + delta), len(ids))
            loss = F.cross_entropy(z, y)
            (loss / steps).backward()  # accumulates (1/K) grad_theta; delta.grad is g_adv
            losses.append(loss.detach())
            hits.append(_acc(z, y))
            if t + 1 < steps:
                with torch.no_grad():
                    delta = project(delta + alpha * steepest(delta.grad, "l2"), eps, "l2")
        optimizer.step()
        return torch.stack(losses).mean(), {"adv_acc": torch.stack(hits).mean()}

    return fit(model, data, epochs=epochs, step=step, **fit_options)

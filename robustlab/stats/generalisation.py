"""Measures beyond the tutorial's Table 1 that predict generalisation (after Jiang et al.,
"Fantastic generalization measures and where to find them", ICLR 2020): the path norm, sharpness,
the Fisher-Rao norm, a VC-dimension bound, the speed of optimisation and the gradient noise.

Layers are read as in `robustlab.stats.complexity`; every measure leaves the model as found.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, jvp

from .._checks import check_images, check_in_range, check_labels, check_positive
from .._model import check_model_input, eval_mode, predict
from .complexity import LAYERS, layers, parameter_count

PATH_FREE = (nn.ReLU, nn.Flatten, nn.Identity, nn.Dropout)  # identities on the path-norm input


def _batch(model: nn.Module, x, y) -> tuple[torch.Tensor, torch.Tensor]:
    """Checked examples; one example's forward pass gives K to check the labels against."""
    x = check_images(x, ndim=None)
    check_model_input(model, x)
    return x, check_labels(y, x, predict(model, x[:1]).shape[1])


def _params(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's parameters as detached tensors, to run it through `functional_call` with
    other values while its own parameters, flags and .grad stay untouched."""
    return {k: p.detach() for k, p in model.named_parameters()}


def _losses(model: nn.Module, params: dict[str, torch.Tensor], x, y) -> torch.Tensor:
    return F.cross_entropy(functional_call(model, params, (x,)), y, reduction="none")


def path_norm(model: nn.Module, in_shape: Sequence[int]) -> float:
    """The l2 path norm of Neyshabur et al. (COLT 2015), sqrt(sum over input-output paths of
    prod_edges w^2), computed as Jiang et al. (ICLR 2020) do: the network with squared
    weights and no biases, summed over its outputs at an all-ones input.

    Arguments:
        in_shape: the shape of one input, e.g. (1, 8, 8).
    Only Linear, Conv, ReLU, Flatten, Identity and Dropout (in eval mode) keep the identity,
    inside nn.Sequential containers; any other module is refused by name.
    """
    layers(model)
    if not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in in_shape):
        raise ValueError(f"in_shape must be the positive sizes of one input, got {in_shape!r}")
    for name, m in model.named_modules():
        plain_sequential = isinstance(m, nn.Sequential) and type(m).forward is nn.Sequential.forward
        if not (isinstance(m, LAYERS + PATH_FREE) or plain_sequential):
            raise ValueError(f"path_norm cannot read {name or 'the model'} ({type(m).__name__}): "
                             "only Linear/Conv/ReLU/Flatten/Identity/Dropout in nn.Sequential")
    squared = {k: (p.square() if k.endswith("weight") else torch.zeros_like(p))
               for k, p in _params(model).items()}
    ones = torch.ones(1, *in_shape, dtype=next(iter(squared.values())).dtype,
                      device=next(iter(squared.values())).device)
    with eval_mode(model), torch.no_grad():
        out = functional_call(model, squared, (ones,))
    return math.sqrt(out.double().sum().item())


def sharpness(model: nn.Module, x, y, *, eps: float = 1e-3, steps: int = 10) -> float:
    """Keskar et al.'s epsilon-sharpness (ICLR 2017, eq. 4) on the batch (x, y), in percent:

        100 * (max_{|delta_i| <= eps (|theta_i| + 1)} L(theta + delta) - L(theta)) / (1 + L(theta))

    over every parameter (their A = I). The maximum is sought by projected sign-gradient ascent
    in that box (`steps` steps of 2.5 eps (|theta| + 1) / steps, the best point kept); Keskar
    et al. use L-BFGS-B. Either gives a lower bound on the true maximum.

    Arguments:
        x, y: the batch the loss L (mean cross-entropy) is measured on.
        eps: the box's relative size (Keskar et al. report 1e-3 and 5e-4).
        steps: ascent steps.
    """
    x, y = _batch(model, x, y)
    eps, steps = check_positive(eps, "eps"), check_positive(steps, "steps", integer=True)
    theta = _params(model)
    box = {k: eps * (t.abs() + 1) for k, t in theta.items()}
    delta = {k: torch.zeros_like(t, requires_grad=True) for k, t in theta.items()}

    def loss_at(shift):
        return _losses(model, {k: theta[k] + shift[k] for k in theta}, x, y).mean()
    with eval_mode(model), torch.enable_grad():
        loss = loss_at(delta)
        base = best = loss.detach()
        for _ in range(steps):
            grads = torch.autograd.grad(loss, list(delta.values()), materialize_grads=True)
            delta = {k: torch.minimum(torch.maximum(d + 2.5 * box[k] / steps * g.sign(), -box[k]),
                                      box[k]).detach().requires_grad_(True)
                     for (k, d), g in zip(delta.items(), grads)}
            loss = loss_at(delta)
            best = torch.maximum(best, loss.detach())
    return (100 * (best - base) / (1 + base)).item()


def fisher_rao_norm(model: nn.Module, x, y) -> float:
    """The Fisher-Rao norm of Liang et al. (AISTATS 2019), sqrt(theta^T I(theta) theta) with
    the empirical Fisher I = mean_i grad l_i grad l_i^T on (x, y): sqrt(mean_i <theta, grad_theta
    l_i>^2), l_i the cross-entropy of example i. (For a bias-free ReLU network of L hidden
    layers, <theta, grad l_i> = (L + 1) <dl_i/df, f(x_i)>, their Lemma 2.1.)

    Arguments:
        x, y: the examples the expectation runs over.
    """
    x, y = _batch(model, x, y)
    theta = _params(model)
    # <theta, grad l_i> for every i at once: the derivative of l_i along the direction theta
    with eval_mode(model):
        _, along = jvp(lambda p: _losses(model, p, x, y), (theta,), (theta,))
    return along.double().square().mean().sqrt().item()


def vc_dimension(model: nn.Module) -> float:
    """Baum and Haussler's (1989) bound on the VC dimension of a feed-forward network of W
    parameters and U computing units, 2 W log2(e U) (threshold units; a parameter-count
    measure for ReLU networks). Units: a Linear layer's outputs, a convolution's filters."""
    units = sum(m.weight.shape[0] for _, m in layers(model))
    return 2 * parameter_count(model) * math.log2(math.e * units)


def vc_bound(model: nn.Module, n: int, *, delta: float = 0.05) -> float:
    """Vapnik's bound on the generalisation gap with probability 1 - delta, from `vc_dimension`
    d and n training examples: sqrt((d (ln(2n / d) + 1) + ln(4 / delta)) / n); inf (vacuous)
    when n <= d.

    Arguments:
        n: the number of training examples.
        delta: the confidence parameter, in (0, 1).
    """
    check_positive(n, "n", integer=True)
    check_in_range(delta, "delta", 0, 1, low_open=True, high_open=True)
    d = vc_dimension(model)
    if n <= d:
        return math.inf
    return math.sqrt((d * (math.log(2 * n / d) + 1) + math.log(4 / delta)) / n)


def steps_to_loss(history: Sequence, level: float) -> float:
    """Speed of optimisation (Hardt et al., 2016; Jiang et al., 2020): how many steps the
    history took to reach a loss <= `level` (counted from 1); inf if it never did.

    Arguments:
        history: losses in order, numbers or `train.fit` rows (dicts with a "loss").
        level: the target loss, e.g. 0.1 cross-entropy.
    """
    if not isinstance(level, (int, float)) or isinstance(level, bool) or not math.isfinite(level):
        raise ValueError(f"level must be a finite number, got {level!r}")
    if isinstance(history, (str, bytes)) or not isinstance(history, Sequence) or not history:
        raise ValueError("history must be a non-empty sequence of losses")
    for step, row in enumerate(history, 1):
        value = row["loss"] if isinstance(row, Mapping) else row
        if float(value) <= level:
            return step
    return math.inf


def gradient_noise(model: nn.Module, x, y, *, batch_size: int = 32) -> float:
    """The magnitude of the gradient noise (Chaudhari and Soatto, 2018; Smith and Le, 2018):
    sum_b (n_b / n) ||g_b - g||^2, g_b the mean cross-entropy gradient of minibatch b (x split
    in order) and g = sum_b (n_b / n) g_b the full-batch gradient.

    Arguments:
        x, y: the data.
        batch_size: the minibatch size.
    """
    x, y = _batch(model, x, y)
    check_positive(batch_size, "batch_size", integer=True)
    theta = {k: t.clone().requires_grad_(True) for k, t in _params(model).items()}
    weighted, square = 0.0, 0.0  # device tensors after the first batch: no sync per batch
    with eval_mode(model), torch.enable_grad():
        for xb, yb in zip(x.split(batch_size), y.split(batch_size)):
            grads = torch.autograd.grad(_losses(model, theta, xb, yb).mean(), list(theta.values()),
                                        materialize_grads=True)
            g = torch.cat([t.flatten() for t in grads]).double()
            weighted, square = weighted + len(xb) * g, square + len(xb) * g.dot(g)
    mean = weighted / len(x)
    return (square / len(x) - mean.dot(mean)).clamp_min(0).item()



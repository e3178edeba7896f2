"""Adaptive attacks on defences that obfuscate gradients: EOT for randomness, BPDA for shattering.

Athalye, Carlini and Wagner, "Obfuscated gradients give a false sense of security" (ICML 2018)
show that a defence whose gradient is random, zero or undefined is broken by changing how the
gradient is computed, not the attack. Both fixes here are wrappers: an ``nn.Module`` that any
gradient attack (``fgsm``, ``pgd``, ``cw``) takes as its model, e.g.
``pgd(EOT(defended, samples=16), x, y, ...)``. The defences they break are in
``robustlab.defences`` (``bit_depth``, ``RandomResizePad``, ``Defended``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .._checks import check_positive

Transform = Callable[[torch.Tensor], torch.Tensor]


class BPDA(nn.Module):
    """Backward Pass Differentiable Approximation of a preprocessing step.

    Athalye, Carlini and Wagner (ICML 2018), section 4.1: the forward pass is the real defence
    ``model(preprocess(x))``; the backward pass replaces preprocess by a differentiable g with
    g(x) ~ preprocess(x), by default the identity (the straight-through estimator):
        forward  model(preprocess(x)),   backward  grad_x model(g(x')) at x' = preprocess(x).
    Written as ``g(x) + (preprocess(x) - g(x)).detach()``: the value of preprocess, the
    derivative of g.
    """

    def __init__(self, model: nn.Module, preprocess: Transform, approx: Transform | None = None):
        super().__init__()
        self.model, self.preprocess, self.approx = model, preprocess, approx

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = x if self.approx is None else self.approx(x)
        return self.model(g + (self.preprocess(x) - g).detach())


class EOT(nn.Module):
    """Expectation over Transformation: the average prediction of a randomised model.

    Athalye, Engstrom, Ilyas and Kwok, "Synthesizing robust adversarial examples" (ICML 2018),
    eq. 1, and Athalye, Carlini and Wagner (ICML 2018), section 4.2: attack
    E_{t ~ T}[log P(y | t(x))] instead of one random draw, with the gradient of the Monte Carlo
    mean over `samples` draws. Forward returns (1/S) sum_s log_softmax(model(x)) over S fresh
    draws of the random `model` (e.g. ``Defended(net, RandomResizePad())``); these are valid
    logits, their margins are exactly the mean margins, and cross-entropy on them is the mean
    cross-entropy up to a normaliser. The S copies go through the model as one batch.
    """

    def __init__(self, model: nn.Module, samples: int = 16):
        super().__init__()
        self.model, self.samples = model, check_positive(samples, "samples", integer=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.model(x.repeat(self.samples, *([1] * (x.dim() - 1))))
        return z.log_softmax(1).view(self.samples, len(x), -1).mean(0)

"""Adaptive attacks on defences that obfuscate gradients: EOT for randomness, BPDA for shattering.

Athalye, Carlini and Wagner, "Obfuscated gradients give a false sense of security" (ICML 2018)
show that a defence whose gradient is random, zero or undefined is broken by changing how the
gradient is computed, not the attack. Both fixes here are wrappers: an ``nn.Module`` that any
gradient attack (``fgsm``, ``pgd``, ``cw``) takes as its model, e.g.
``pgd(EOT(defended, samples=16), x, y, ...)``. Two toy defences to break come with them:
``bit_depth`` (quantisation: zero gradient almost everywhere) and ``RandomResizePad``
(randomised input transformation, Xie et al. ICLR 2018).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_positive

Transform = Callable[[torch.Tensor], torch.Tensor]


def bit_depth(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Round each pixel of `x` in [0, 1] to one of 2^bits levels (Xu et al., NDSS 2018).

    round() is piecewise constant, so autograd gives exactly zero gradient: a "shattered"
    gradient in Athalye et al.'s terms.
    """
    check_positive(bits, "bits", integer=True)
    levels = 2 ** bits - 1
    return torch.round(x * levels) / levels


class RandomResizePad(nn.Module):
    """Shrink each image by a random factor and pad it back at a random place with zeros.

    Xie, Wang, Zhang, Ren and Yuille, "Mitigating adversarial effects through randomization"
    (ICLR 2018), at the size of the input: one bilinear affine warp per image, scale drawn
    uniformly in [min_scale, 1], offset uniformly so the shrunken image stays in the frame.
    Random in train and eval mode alike, as a deployed defence is; the draws come from
    `generator` (CPU), so a seeded generator replays them.
    """

    def __init__(self, min_scale: float = 0.75, generator: torch.Generator | None = None):
        super().__init__()
        if not 0 < min_scale <= 1:
            raise ValueError(f"min_scale must lie in (0, 1], got {min_scale}")
        self.min_scale, self.generator = min_scale, generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = len(x)
        s = self.min_scale + (1 - self.min_scale) * torch.rand(n, generator=self.generator)
        t = (1 - s)[:, None] * (2 * torch.rand(n, 2, generator=self.generator) - 1)
        # output point o reads input point (o - t) / s: the image lands on [t - s, t + s]
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0] = theta[:, 1, 1] = 1 / s
        theta[:, :, 2] = -t / s[:, None]
        grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class Defended(nn.Module):
    """A defence as deployed: ``model(transform(x))``, gradients as autograd finds them."""

    def __init__(self, model: nn.Module, transform: Transform):
        super().__init__()
        self.model, self.transform = model, transform

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.transform(x))


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

"""Input transformations as defences: quantisation, random resizing and padding, and the wrapper
that deploys one in front of a model.

Each is what Athalye, Carlini and Wagner, "Obfuscated gradients give a false sense of security"
(ICML 2018) break with BPDA or EOT (``robustlab.attacks.BPDA`` / ``EOT``): ``bit_depth``
shatters the gradient (zero almost everywhere), ``RandomResizePad`` randomises it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_in_range, check_positive
from .._random import draw_device

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
    `generator` (on its device), so a seeded generator replays them.
    """

    def __init__(self, min_scale: float = 0.75, generator: torch.Generator | None = None):
        super().__init__()
        check_in_range(min_scale, "min_scale", 0, 1, low_open=True)
        self.min_scale, self.generator = min_scale, generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = len(x)
        g, dev = self.generator, draw_device(self.generator, x.device)
        s = self.min_scale + (1 - self.min_scale) * torch.rand(n, generator=g, device=dev)
        t = (1 - s)[:, None] * (2 * torch.rand(n, 2, generator=g, device=dev) - 1)
        # output point o reads input point (o - t) / s: the image lands on [t - s, t + s]
        theta = torch.zeros(n, 2, 3, device=dev)
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

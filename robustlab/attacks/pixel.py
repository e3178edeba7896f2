"""Attacks that change a single pixel.

The tutorial's traffic-light example (Wu, Wicker, Ruan, Huang and Kwiatkowska, "A game-based
approximate verification of deep neural networks with provable guarantees", TCS 2019): one
changed pixel turns a green light red.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from ._base import check_attack_inputs, logits_of

CUBE_CORNERS = tuple(itertools.product((0.0, 1.0), repeat=3))


@torch.no_grad()
def single_pixel_search(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                        colours=None, targeted: bool = False,
                        batch_size: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Exhaustive search over every pixel position and a set of colours for a one-pixel attack.

    For each image, tries setting each of the H*W pixels to each colour in `colours` (default:
    the 8 corners of the RGB cube for 3 channels, black and white for 1) and keeps the first
    candidate that changes the label (or reaches the target when `targeted`), preferring the
    one that lowers the true-class margin most. It is a complete search over that finite set,
    so "not found" means no such one-pixel change exists there.

    Returns ``(x_adv, found)``: ``x_adv`` equals ``x`` where nothing was found.
    """
    x, y, _, _ = check_attack_inputs(model, x, y)
    n, c, h, w = x.shape
    if colours is None:
        colours = CUBE_CORNERS if c == 3 else ((0.0,) * c, (1.0,) * c)
    col = torch.as_tensor(colours, dtype=x.dtype, device=x.device).view(-1, c)
    if col.min() < 0 or col.max() > 1:
        raise ValueError("colours must lie in [0, 1]")
    was_training = model.training
    model.eval()
    x_adv, found = x.clone(), torch.zeros(n, dtype=torch.bool, device=x.device)
    # candidate k = (position p, colour q): p = k // len(col), q = k % len(col)
    cand = torch.arange(h * w * len(col), device=x.device)
    try:
        for i in range(n):
            best, best_score = None, None
            for chunk in cand.split(batch_size):
                p, q = chunk // len(col), chunk % len(col)
                imgs = x[i].expand(len(chunk), c, h, w).clone()
                imgs[torch.arange(len(chunk)), :, p // w, p % w] = col[q]
                z = logits_of(model, imgs, y[i:i + 1])
                label = z.argmax(1)
                hit = label == y[i] if targeted else label != y[i]
                if hit.any():
                    zy = z[:, y[i]]
                    score = (-zy if targeted else zy - z.masked_fill(
                        torch.arange(z.shape[1], device=z.device) == y[i], -torch.inf).amax(1))
                    score = score.masked_fill(~hit, torch.inf)
                    j = score.argmin()
                    if best_score is None or score[j] < best_score:
                        best, best_score = imgs[j], score[j]
            if best is not None:
                x_adv[i], found[i] = best, True
    finally:
        model.train(was_training)
    return x_adv, found

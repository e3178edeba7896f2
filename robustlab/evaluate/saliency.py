"""Input-gradient saliency and two measures of what it shows: its alignment with the image, and
the deletion and insertion curves of the pixels it ranks first.

Tsipras et al., "Robustness may be at odds with accuracy" (ICLR 2019), section 5, show that the
input gradients of adversarially trained models line up with the salient features of the image
(edges, strokes), where a standard model's look like noise. Here that is measured, not only shown:
`saliency_alignment` is the correlation of |gradient| with the image itself (on the digits, the
strokes are the bright pixels), and `deletion_insertion` is the test of Petsiuk, Das and Saenko,
"RISE: randomized input sampling for explanation of black-box models" (BMVC 2018): remove the most
salient pixels first and watch the true-class probability fall (a small area under that curve is
a faithful ranking), or insert them into a blank image and watch it rise (a large area).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_images, check_in_range, check_labels, check_positive
from .._model import check_model, frozen, logits_of
from ..tables import Tabular, markdown_table

__all__ = ["SaliencyScores", "deletion_insertion", "input_saliency", "saliency_alignment"]


def input_saliency(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The gradient of the true-class logit with respect to the input, d f_y(x) / d x, the
    saliency map of Simonyan et al. (2014) that Tsipras et al. compare between standard and
    robust models; shape and device of `x`. The model is left as found."""
    check_model(model)
    x = check_images(x, ndim=None)
    y = check_labels(y, x)
    with frozen(model):
        x = x.detach().clone().requires_grad_(True)
        z = logits_of(model, x)
        (grad,) = torch.autograd.grad(z.gather(1, y[:, None]).sum(), x)
    return grad.detach()


def saliency_alignment(saliency: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Pearson's correlation, per example, between |saliency| and the image x (channels summed):
    near 1 when the gradient is large exactly on the bright strokes of a digit, near 0 when it is
    spread like noise. Shape (N,); an image or a saliency map that is constant gives 0."""
    if not isinstance(saliency, torch.Tensor) or saliency.shape != x.shape:
        raise ValueError(f"saliency must be a tensor of the shape of x {tuple(x.shape)}")
    x = check_images(x, ndim=None)
    a = saliency.abs().flatten(2).sum(1) if x.dim() > 2 else saliency.abs()
    b = x.flatten(2).sum(1) if x.dim() > 2 else x
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    denominator = a.norm(dim=1) * b.norm(dim=1)
    return torch.where(denominator > 0, (a * b).sum(1) / denominator.clamp_min(1e-30),
                       torch.zeros_like(denominator))


@dataclasses.dataclass(frozen=True)
class SaliencyScores(Tabular):
    """Deletion and insertion curves: the mean true-class probability after each fraction of the
    pixels (ranked by saliency) is removed or inserted, and the areas under both curves."""

    fractions: torch.Tensor
    deletion: torch.Tensor
    insertion: torch.Tensor
    deletion_auc: float
    insertion_auc: float

    def table(self) -> str:
        return markdown_table(["curve", "area under curve", "better when"],
                              [["deletion", self.deletion_auc, "smaller"],
                               ["insertion", self.insertion_auc, "larger"]], digits=3)


def deletion_insertion(model: nn.Module, x: torch.Tensor, y: torch.Tensor, saliency: torch.Tensor, *,
                       steps: int = 16, baseline: float = 0.0) -> SaliencyScores:
    """Petsiuk et al.'s deletion and insertion metrics (2018, section 4.1). Pixels are ranked by
    |saliency| (channels summed); after removing the top k of them (set to `baseline`), or after
    inserting them into an image of `baseline`, the model's softmax probability of the true class
    is read, for k at `steps` + 1 evenly spaced fractions from 0 to 1. Areas by the trapezoid rule.
    Every curve is computed in one batch per step; the model is left as found."""
    check_model(model)
    x = check_images(x)
    y = check_labels(y, x)
    check_positive(steps, "steps", integer=True)
    check_in_range(baseline, "baseline", 0.0, 1.0)
    if not isinstance(saliency, torch.Tensor) or saliency.shape != x.shape:
        raise ValueError(f"saliency must be a tensor of the shape of x {tuple(x.shape)}")
    n, pixels = len(x), x.shape[2] * x.shape[3]
    rank = saliency.abs().sum(1).flatten(1).argsort(1, descending=True).argsort(1)  # 0 = most salient
    fractions = torch.linspace(0, 1, steps + 1, dtype=torch.float64)
    blank = torch.full_like(x, baseline)
    deletion, insertion = [], []
    with frozen(model):
        for f in fractions.tolist():  # host numbers fixed before the loop: no read inside it
            chosen = (rank < round(f * pixels)).reshape(n, 1, *x.shape[2:])
            both = torch.cat([torch.where(chosen, blank, x), torch.where(chosen, x, blank)])
            p = F.softmax(logits_of(model, both), 1).gather(1, torch.cat([y, y])[:, None])[:, 0]
            deletion.append(p[:n].mean())
            insertion.append(p[n:].mean())
    deletion, insertion = torch.stack(deletion).double(), torch.stack(insertion).double()
    f = fractions.to(deletion.device)
    return SaliencyScores(fractions, deletion, insertion, float(torch.trapezoid(deletion, f)),
                          float(torch.trapezoid(insertion, f)))

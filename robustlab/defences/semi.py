"""Semi-supervised adversarial training: robust self-training on pseudo-labelled data.

Carmon, Raghunathan, Schmidt, Liang and Duchi, "Unlabeled data improves adversarial robustness"
(NeurIPS 2019), Algorithm 1 (robust self-training, RST), with labelled data (x_i, y_i), i <= n,
and unlabelled inputs x~_j, j <= m:

    1. theta_int = argmin_theta  sum_i L_standard(theta, x_i, y_i)      (a standard "teacher")
    2. y~_j = argmax_k f_{theta_int}(x~_j)_k                              (pseudo-labels)
    3. theta_fin = argmin_theta  sum_i L_robust(theta, x_i, y_i) + w sum_j L_robust(theta, x~_j, y~_j)

Their analysis on Schmidt et al.'s Gaussian model shows that the pseudo-labels of a standard
classifier trained on few labels, though noisy, let unlabelled data close the sample-complexity gap
of robust learning: as many labels as standard learning needs then suffice. Uesato, Alayrac,
Huang, Stanforth, Fawzi and Kohli, "Are labels required for improving adversarial robustness?"
(NeurIPS 2019) reach the same conclusion independently: their UAT-FT
("fixed targets") is step 3 with the teacher's labels; UAT-OT replaces the pseudo-labels by a
label-free smoothness loss (what `robustlab.defences.vat` and TRADES' KL term are).

Here step 3 is `robustlab.train.fit` on the union with any objective (PGD-AT, TRADES, ...) and
w = 1: every example, labelled or not, counts the same. Carmon et al. also fix the share of
unlabelled examples in each batch, which plain shuffling of the union does not.
"""

from __future__ import annotations

import copy
import dataclasses

import torch
from torch import nn

from .._checks import check_labels, check_positive, check_seed
from .._model import check_model, predict
from ..train import Objective, cross_entropy, fit

__all__ = ["SelfTraining", "pseudo_labels", "robust_self_training"]


def _floating(x, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor of inputs")
    if x.dim() < 2 or len(x) == 0:
        raise ValueError(f"{name} must be a non-empty batch (N, ...), got shape {tuple(x.shape)}")
    return x


def pseudo_labels(model: nn.Module, x: torch.Tensor, *, batch_size: int = 512) -> torch.Tensor:
    """The teacher's labels of unlabelled inputs: y~ = argmax_k f(x)_k (Carmon et al. 2019,
    Algorithm 1, step 2; Lee 2013's "pseudo-labels").

    Args:
        model: the (standard) classifier; evaluated in eval mode without gradients and left
            exactly as found.
        x: the unlabelled inputs (N, ...).
        batch_size: inputs per forward pass.
    Returns the labels (N,) long, on x's device.
    """
    check_model(model)
    _floating(x, "x")
    check_positive(batch_size, "batch_size", integer=True)
    return predict(model, x, batch_size=batch_size).argmax(1)


@dataclasses.dataclass
class SelfTraining:
    """What `robust_self_training` did: ``history`` (step 3's `fit` history, one dict per
    epoch), ``labels`` (the pseudo-labels of the unlabelled inputs) and ``teacher`` (the
    standard model that gave them)."""

    history: list[dict]
    labels: torch.Tensor
    teacher: nn.Module


def robust_self_training(model: nn.Module, labelled: tuple[torch.Tensor, torch.Tensor],
                         unlabelled: torch.Tensor, *, objective: Objective, epochs: int,
                         teacher: nn.Module | None = None, teacher_epochs: int | None = None,
                         lr: float = 1e-3, batch_size: int = 64, seed: int = 0,
                         device: str | torch.device | None = None) -> SelfTraining:
    """Robust self-training (Carmon et al. 2019, Algorithm 1): a standard teacher on the labelled
    data, its pseudo-labels on the unlabelled inputs, then `objective` on both.

    Step 3 minimises sum_i L_robust(x_i, y_i) + sum_j L_robust(x~_j, y~_j) (w = 1) by
    ``fit(model, (x ∪ x~, y ∪ y~), objective=objective, epochs=epochs, lr=lr,
    batch_size=batch_size, seed=seed)``. Uesato et al. 2019's UAT-FT is the same algorithm.

    Args:
        model: trained in place (as `fit` does) by step 3.
        labelled: the ``(x, y)`` pair of labelled inputs and their integer labels.
        unlabelled: inputs without labels, of the same shape per example as the labelled ones.
        objective: the robust loss of step 3, e.g. ``defences.pgd_at(...)``.
        epochs: epochs of step 3.
        teacher: a trained standard model to label the unlabelled inputs (left as found); if
            None, step 1 trains a copy of `model` as passed in (same initial weights) with
            cross-entropy on the labelled data for `teacher_epochs` (default: `epochs`).
        lr, batch_size, device: `fit`'s, for both trainings.
        seed: `fit`'s shuffling seed, for both trainings: same seed, same result.
    Returns a `SelfTraining` (step 3's history, the pseudo-labels, the teacher).
    """
    check_model(model)
    if not isinstance(labelled, (tuple, list)) or len(labelled) != 2:
        raise TypeError("labelled must be an (x, y) pair of tensors")
    x, y = _floating(labelled[0], "labelled[0]"), labelled[1]
    y = check_labels(y, x, name="labelled[1]")
    x_unl = _floating(unlabelled, "unlabelled")
    if x_unl.shape[1:] != x.shape[1:]:
        raise ValueError(f"unlabelled inputs have shape {tuple(x_unl.shape[1:])} per example, the "
                         f"labelled ones {tuple(x.shape[1:])}")
    if not callable(objective):
        raise TypeError(f"objective must be callable, got {type(objective).__name__}")
    check_positive(epochs, "epochs", integer=True)
    seed = check_seed(seed)
    if teacher is None:
        teacher_epochs = epochs if teacher_epochs is None else teacher_epochs
        check_positive(teacher_epochs, "teacher_epochs", integer=True)
        teacher = copy.deepcopy(model)
        fit(teacher, (x, y), epochs=teacher_epochs, objective=cross_entropy, lr=lr,
            batch_size=batch_size, seed=seed, device=device, progress=False)
    else:
        check_model(teacher)
    labels = pseudo_labels(teacher, x_unl).to(y.device)
    union = (torch.cat([x, x_unl.to(x.device)]), torch.cat([y, labels]))
    history = fit(model, union, epochs=epochs, objective=objective, lr=lr,
                  batch_size=batch_size, seed=seed, device=device, progress=False)
    return SelfTraining(history=history, labels=labels, teacher=teacher)

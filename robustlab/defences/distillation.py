"""Defensive distillation, Papernot, McDaniel, Wu, Jha and Swami, "Distillation as a defense to
adversarial perturbations against deep neural networks" (IEEE S&P 2016).

A teacher is trained with its softmax at a high temperature T,

    softmax(z / T)_i = exp(z_i / T) / sum_j exp(z_j / T),

its soft labels at T label the training set, a student (the same architecture in the paper)
is trained on them at the same T, and the student is deployed at T = 1. Trained to make
z / T fit the labels, its logits z come out about T times larger, so at T = 1 its softmax is
saturated: the cross-entropy's input gradient (p - onehot(y)) dz/dx vanishes, often to exactly
0 in float32, and gradient attacks on the softmax loss (FGSM, PGD) find nothing to follow.
Carlini and Wagner ("Towards evaluating the robustness of neural networks", S&P 2017) showed
that this is gradient masking, not robustness: their attack on the logits z (not the
softmax) succeeds as well as on an undistilled network.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_images, check_labels, check_positive
from .._model import check_model, check_model_input, eval_mode
from ..train import fit

__all__ = ["distillation", "soft_labels"]


def _check_temperature(temperature) -> float:
    return float(check_positive(temperature, "temperature"))


def _at_temperature(temperature: float):
    """The Objective ``CE(softmax(model(x) / T), y)``; y class indices or probabilities."""
    def objective(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(x) / temperature, y)

    objective.__name__ = objective.__qualname__ = f"cross_entropy(T={temperature:g})"
    return objective


@torch.no_grad()
def soft_labels(teacher: nn.Module, x: torch.Tensor, *, temperature: float = 100.0,
                batch_size: int = 512) -> torch.Tensor:
    """The teacher's soft labels softmax(F(x) / T) (Papernot et al., section IV-B, step 2):
    (N, K) probabilities on x's device, computed in eval mode, `batch_size` at a time, on the
    teacher's device; the teacher's modes are restored."""
    check_model(teacher)
    x = check_images(x)
    temperature = _check_temperature(temperature)
    check_positive(batch_size, "batch_size", integer=True)
    dev = next(teacher.parameters(), torch.empty(0, device=x.device)).device
    with eval_mode(teacher):
        probs = [F.softmax(teacher(xb.to(dev)) / temperature, 1).to(x.device)
                 for xb in x.split(batch_size)]
    return torch.cat(probs)


def distillation(teacher: nn.Module, student: nn.Module, data: tuple[torch.Tensor, torch.Tensor],
                 *, temperature: float = 100.0, epochs: int = 50,
                 student_epochs: int | None = None, **fit_kwargs) -> dict[str, list[dict]]:
    """Defensive distillation (Papernot et al. 2016, section IV-B), in place on both models:

    1. train `teacher` on ``data = (x, y)`` with the loss CE(softmax(F(x) / T), y);
    2. label x with the teacher's soft labels softmax(F(x) / T) (`soft_labels`);
    3. train `student` on them at the same T: CE(softmax(F_d(x) / T), soft labels);
    4. deploy the student at T = 1: use ``student(x)`` as its logits, as any model.

    Arguments:
        temperature: T; the paper's MNIST and CIFAR-10 choice is T = 100.
        epochs: the teacher's epochs (the paper's MNIST setting: 50); `student_epochs` the
            student's (default: the same).
        fit_kwargs: passed to both `robustlab.train.fit` calls (lr, batch_size, device, seed,
            progress, ...; not objective or step, which distillation sets).

    Returns ``{"teacher": history, "student": history}``, each `fit`'s history. Both models end
    in eval mode (as `fit` leaves them).
    """
    check_model(teacher)
    check_model(student)
    temperature = _check_temperature(temperature)
    check_positive(epochs, "epochs", integer=True)
    student_epochs = epochs if student_epochs is None else check_positive(
        student_epochs, "student_epochs", integer=True)
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise TypeError("data must be an (x, y) pair of tensors: distillation labels every "
                        "x with the teacher's soft labels")
    x, y = check_images(data[0], "data[0]"), data[1]
    y = check_labels(y, x, name="data[1]")
    for key in ("objective", "step"):
        if key in fit_kwargs:
            raise TypeError(f"distillation sets fit's {key} itself; do not pass {key}=")
    objective = _at_temperature(temperature)
    teacher_history = fit(teacher, (x, y), epochs=epochs, objective=objective, **fit_kwargs)
    check_model_input(teacher, x.to(next(teacher.parameters()).device))
    soft = soft_labels(teacher, x, temperature=temperature)
    student_history = fit(student, (x, soft), epochs=student_epochs, objective=objective,
                          **fit_kwargs)
    return {"teacher": teacher_history, "student": student_history}

"""One training loop, `fit`, with pluggable objectives; `evaluate` for accuracy (and `predict`,
the library's batched forward pass, for logits).

An objective is a function ``objective(model, x, y) -> loss`` (a scalar tensor). Defences that
only change the loss (PGD-AT, TRADES, IBP training, ...) are objectives and plug in here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ._checks import check_logits, check_positive
from ._model import correct, eval_mode, model_device, predict
from .data import loader
from .utils import default_device

__all__ = ["Objective", "cross_entropy", "evaluate", "fit", "predict"]

Objective = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def cross_entropy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Standard training: the mean cross-entropy of the model's logits."""
    return F.cross_entropy(check_logits(model(x), len(x)), y)


def _batches(data, batch_size: int, shuffle: bool, seed: int) -> Iterable:
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        return loader(data[0], data[1], batch_size=batch_size, shuffle=shuffle, seed=seed)
    if isinstance(data, Iterable):
        return data
    raise TypeError(f"data must be an (x, y) pair of tensors or an iterable of (x, y) batches, "
                    f"got {type(data).__name__}")


def fit(model: nn.Module, data, *, epochs: int, objective: Objective = cross_entropy,
        optimizer: torch.optim.Optimizer | None = None, lr: float = 1e-3,
        weight_decay: float = 0.0, scheduler=None, batch_size: int = 64,
        device: str | torch.device | None = None, eval_data=None, seed: int = 0,
        progress: bool = True) -> list[dict]:
    """Train `model` on `data` for `epochs`, minimising `objective`; return the history.

    Arguments:
        data: an ``(x, y)`` pair of tensors (shuffled each epoch with `seed`) or a DataLoader.
        objective: ``objective(model, x, y) -> loss``; cross-entropy by default.
        optimizer: defaults to Adam(lr, weight_decay) over the model's parameters.
        scheduler: optional learning-rate scheduler, stepped once per epoch.
        device: where to train; CUDA when available if None. The model is moved there.
        eval_data: if given, test accuracy is measured after every epoch.
    Returns a list with one dict per epoch: ``epoch``, ``loss`` (mean) and ``test_acc``.
    """
    check_positive(epochs, "epochs", integer=True)
    device = default_device(device)
    model.to(device)
    if optimizer is None:
        optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    batches = _batches(data, batch_size, shuffle=True, seed=seed)
    history = []
    bar = tqdm(range(epochs), desc="fit", disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        total, count = 0.0, 0
        for x, y in batches:
            x, y = x.to(device), y.to(device)
            loss = objective(model, x, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(x)
            count += len(x)
        if scheduler is not None:
            scheduler.step()
        row = {"epoch": epoch + 1, "loss": total / max(count, 1)}
        if eval_data is not None:
            row["test_acc"] = evaluate(model, eval_data, device=device)
        history.append(row)
        bar.set_postfix({k: round(v, 4) for k, v in row.items() if k != "epoch"})
    model.eval()
    return history


def evaluate(model: nn.Module, data, *, device: str | torch.device | None = None,
             batch_size: int = 512) -> float:
    """Accuracy of `model` on `data` (an ``(x, y)`` pair or a DataLoader), in eval mode.

    The train/eval mode of every submodule is restored afterwards. A model whose output is not
    logits of shape (N, K) raises a ValueError that says so.
    """
    if device is not None:
        model.to(device)
    dev = model_device(model)
    hits, count = 0, 0
    with eval_mode(model):
        for x, y in _batches(data, batch_size, shuffle=False, seed=0):
            x, y = x.to(dev or x.device), y.to(dev or x.device)
            hits = hits + correct(model, x, y, batch_size=batch_size).sum()  # no sync per batch
            count += len(x)
    if count == 0:
        raise ValueError("data is empty")
    return int(hits) / count

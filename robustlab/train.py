"""One training loop, `fit`, with pluggable objectives; `evaluate` for accuracy (and `predict`,
the library's batched forward pass, for logits).

An objective is a function ``objective(model, x, y) -> loss`` (a scalar tensor) or
``-> (loss, logs)`` with `logs` a dict of numbers that `fit` averages per epoch and shows.
Defences that only change the loss (PGD-AT, TRADES, IBP training, ...) are objectives and plug
in here.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import checkpoint as _ckpt
from ._checks import check_logits, check_positive
from ._model import eval_mode, model_device, predict
from .data import loader
from .utils import default_device

__all__ = ["Objective", "cross_entropy", "evaluate", "fit", "predict"]

Objective = Callable[[nn.Module, torch.Tensor, torch.Tensor],
                     torch.Tensor | tuple[torch.Tensor, dict]]
Step = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.optim.Optimizer],
                torch.Tensor | tuple[torch.Tensor, dict]]


def cross_entropy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Standard training: the mean cross-entropy of the model's logits."""
    return F.cross_entropy(check_logits(model(x), len(x)), y)


def _batches(data, batch_size: int, shuffle: bool, seed: int) -> Iterable:
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        if len(data[0]) == 0:  # before the shuffling sampler, which fails on it less clearly
            raise ValueError("data is empty: x has no examples")
        return loader(data[0], data[1], batch_size=batch_size, shuffle=shuffle, seed=seed)
    if isinstance(data, Iterable):
        return data
    raise TypeError(f"data must be an (x, y) pair of tensors or an iterable of (x, y) batches, "
                    f"got {type(data).__name__}")


_REPORTED = ("epoch", "loss", "test_acc")  # history keys fit writes itself
_EVAL_BATCH = 512  # evaluate's batch size, also for fit's eval_data


def _loss_and_logs(out: torch.Tensor | tuple) -> tuple[torch.Tensor, dict]:
    """Split what an objective returned, ``loss`` or ``(loss, logs)``, into both parts."""
    if isinstance(out, tuple):
        if len(out) != 2 or not isinstance(out[1], dict):
            raise TypeError("objective must return a loss or a (loss, logs) pair with logs a "
                            f"dict, got a tuple of length {len(out)}")
        loss, logs = out
        clash = set(logs) & set(_REPORTED)
        if clash:
            raise ValueError(f"objective logs may not use the names {sorted(clash)}: fit "
                             f"reports those itself")
        return loss, logs
    return out, {}


def _mark_first(first: torch.Tensor, bad: torch.Tensor, batch: int) -> torch.Tensor:
    """`batch` where `bad` holds and no earlier batch was marked, else `first` (no host sync)."""
    return torch.where((first < 0) & bad, batch, first)


def _epoch(model: nn.Module, batches: Iterable, objective: Objective,
           optimizer: torch.optim.Optimizer, device: torch.device, epoch: int,
           step: Step | None = None) -> dict[str, float]:
    """One pass over `batches`; the example-weighted mean loss and logs of the epoch.

    Sums stay on the device and are read once at the end (one host sync per epoch, not per
    batch); the index of the first batch with a non-finite loss is tracked the same way.
    """
    sums: dict[str, float | torch.Tensor] = {}
    counts: dict[str, int] = {}
    first_bad = torch.full((), -1, dtype=torch.long, device=device)
    batch = -1
    for batch, (x, y) in enumerate(batches):
        x, y = x.to(device), y.to(device)
        if step is not None:  # a loop defence: its own backward passes and optimiser steps
            loss, logs = _loss_and_logs(step(model, x, y, optimizer))
        else:
            loss, logs = _loss_and_logs(objective(model, x, y))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        first_bad = _mark_first(first_bad, ~torch.isfinite(loss.detach()), batch)
        for key, value in {"loss": loss, **logs}.items():
            # tensors stay tensors (no sync); plain floats stay on the host (no copy to the device)
            if isinstance(value, torch.Tensor):
                if value.numel() != 1:
                    raise ValueError(f"objective log {key!r} must be a single number, got a "
                                     f"tensor of shape {tuple(value.shape)}")
                value = value.detach().float().reshape(())
            elif isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"objective log {key!r} must be a number, got "
                                f"{type(value).__name__}")
            sums[key] = sums.get(key, 0.0) + value * len(x)
            counts[key] = counts.get(key, 0) + len(x)
    if batch < 0:
        if epoch == 1:
            raise ValueError("data is empty: it yielded no batches")
        raise ValueError(f"data yielded no batches in epoch {epoch}, after batches in epoch 1: "
                         f"it must be re-iterable (a DataLoader, a list of (x, y) batches or an "
                         f"(x, y) pair of tensors), not a one-shot generator or iterator")
    on_device = [key for key, s in sums.items() if isinstance(s, torch.Tensor)]
    bad, *read = torch.stack([first_bad.float(), *(sums[k].to(device) for k in on_device)]).tolist()
    if bad >= 0:
        raise FloatingPointError(f"the loss is not finite at epoch {epoch}, batch {int(bad) + 1}: "
                                 f"training stopped (lower the learning rate, or check the "
                                 f"data for NaN or infinite values)")
    sums.update(zip(on_device, read))
    return {key: s / counts[key] for key, s in sums.items()}


def fit(model: nn.Module, data, *, epochs: int, objective: Objective = cross_entropy,
        optimizer: torch.optim.Optimizer | None = None, lr: float = 1e-3,
        weight_decay: float = 0.0, scheduler=None, batch_size: int = 64,
        device: str | torch.device | None = None, eval_data=None, seed: int = 0,
        progress: bool = True, checkpoint: str | os.PathLike | None = None,
        resume: bool | str | os.PathLike = False, step: Step | None = None,
        after_epoch: Callable[[nn.Module, dict], bool | None] | None = None) -> list[dict]:
    """Train `model` on `data` for `epochs`, minimising `objective`; return the history.

    Arguments:
        data: an ``(x, y)`` pair of tensors (shuffled each epoch with `seed`), a DataLoader or
            a list of ``(x, y)`` batches: anything iterated afresh each epoch. A one-shot
            generator raises a ValueError when the second epoch finds it exhausted.
        objective: ``objective(model, x, y) -> loss`` or ``-> (loss, logs)``; cross-entropy by
            default. `logs` (a dict of numbers) are averaged over the epoch's examples.
        optimizer: defaults to Adam(lr, weight_decay) over the model's parameters.
        scheduler: optional learning-rate scheduler, stepped once per epoch.
        device: where to train; CUDA when available if None. The model is moved there.
        eval_data: if given, test accuracy is measured after every epoch.
        checkpoint: a file to save the run to after every epoch, atomically (see
            `robustlab.checkpoint`): the model's state dict, the optimizer's and scheduler's
            states and classes, the history, the epoch and every RNG state (torch CPU and CUDA, NumPy,
            Python, the loader's shuffling generator, the generators in the objective's
            closure), loadable with weights_only=True, with
            its sha256 in ``<checkpoint>.sha256.json``.
        resume: True to continue from `checkpoint` if it exists (from scratch if not), or the
            path of a checkpoint to continue from (which must exist; saving then goes to
            `checkpoint`, or to that path if `checkpoint` is None). The checkpoint is checked
            against its sha256 and must come from the same model, optimizer and scheduler;
            training continues at the epoch after it up to `epochs` in all, and the model
            and history equal those of an uninterrupted run with the same seed and data.
            Everything (model, optimizer class and parameter groups, scheduler, the data's and
            objective's generators) is checked before anything is loaded.
        step: instead of `objective`, a whole training step ``step(model, x, y, optimizer)
            -> loss | (loss, logs)`` that runs its own backward passes and optimiser steps
            (the defences of `robustlab.defences.loops`); the loss it returns is only logged.
        after_epoch: ``after_epoch(model, row)``, called after each epoch's row is complete
            (before it is checkpointed); it may add entries to `row`, and returning True stops
            training after this epoch (early stopping). Its own state is not checkpointed.
    Returns a list with one dict per epoch: ``epoch``, ``loss`` (mean), the mean of each log
    and ``test_acc``. Running sums stay on the device and are read once per epoch, so a GPU is
    not stalled every batch; a non-finite loss is therefore caught at the end of its epoch,
    which raises a FloatingPointError naming the epoch and the first bad batch (both counted
    from 1). Empty data raises a ValueError.

    Any exception (a non-finite loss, a refused resume, a failing callback) leaves the model,
    the optimizer and the scheduler exactly as they were passed in: fit keeps a copy of their
    states to put back (a checkpoint already saved keeps the epochs it holds). An interrupt
    (KeyboardInterrupt) keeps what was trained so far.
    """
    check_positive(epochs, "epochs", integer=True)
    if step is not None and objective is not cross_entropy:
        raise ValueError("fit takes an objective or a step, not both")
    with _restored_on_failure(model, optimizer, scheduler):
        device = default_device(device)
        model.to(device)
        if optimizer is None:
            optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
        save_to, resume_from = _checkpoint_paths(checkpoint, resume)
        batches = _batches(data, batch_size, shuffle=True, seed=seed)
        history, start = [], 0
        if resume_from is not None:
            history, start = _resume(resume_from, model, optimizer, scheduler, batches, epochs,
                                     objective)
        bar = tqdm(range(start, epochs), desc="fit", disable=not progress, leave=False,
                   initial=start, total=epochs)
        for epoch in bar:
            model.train()
            row = {"epoch": epoch + 1,
                   **_epoch(model, batches, objective, optimizer, device, epoch + 1, step)}
            if scheduler is not None:
                scheduler.step()
            if eval_data is not None:
                row["test_acc"] = _accuracy(model, eval_data, "eval_data", device, _EVAL_BATCH)
            stop = after_epoch is not None and after_epoch(model, row) is True
            history.append(row)
            if save_to is not None:
                _ckpt.save(save_to, {
                    "format": _ckpt.FORMAT, "epoch": epoch + 1, "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": None if scheduler is None else scheduler.state_dict(),
                    "classes": _ckpt.class_names(optimizer=optimizer, scheduler=scheduler),
                    "history": history, "rng": _ckpt.capture_rng(batches, objective)})
            bar.set_postfix({k: round(v, 4) for k, v in row.items() if k != "epoch"})
            if stop:
                break
        model.eval()
    return history


@contextmanager
def _restored_on_failure(model: nn.Module, optimizer: torch.optim.Optimizer | None,
                         scheduler) -> Iterator[None]:
    """Run the block; if it raises, put the model, optimizer and scheduler back as they were.

    The model's parameters and buffers (values, device, dtype), their .grad and every
    submodule's train/eval mode are copied first, and the optimizer's and scheduler's state
    dicts: a failure midway (a NaN loss after the optimizer stepped, a refused resume) must not
    leave the caller half-trained or NaN weights. KeyboardInterrupt is not caught: stopping a
    run by hand keeps what was trained so far.
    """
    tensors = [*model.parameters(), *model.buffers()]
    values = [t.detach().clone() for t in tensors]
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    modes = [m.training for m in model.modules()]
    optimizer_state = None if optimizer is None else copy.deepcopy(optimizer.state_dict())
    scheduler_state = None if scheduler is None else copy.deepcopy(scheduler.state_dict())
    try:
        yield
    except Exception:
        for t, value in zip(tensors, values):
            t.data = value  # the same tensor objects, so the optimizer's references stay valid
        for p, grad in zip(model.parameters(), grads):
            p.grad = grad
        for m, mode in zip(model.modules(), modes):
            m.training = mode
        if optimizer is not None:
            optimizer.load_state_dict(optimizer_state)
        if scheduler is not None:
            scheduler.load_state_dict(scheduler_state)
        raise


def _checkpoint_paths(checkpoint, resume) -> tuple[Path | None, Path | None]:
    """Where `fit` saves to and resumes from (None: nowhere), or an error naming the argument."""
    def as_path(value, name):
        if not isinstance(value, (str, os.PathLike)):
            raise TypeError(f"{name} must be a path (str or os.PathLike), got "
                            f"{type(value).__name__}")
        path = Path(value)
        if path.is_dir():
            raise ValueError(f"{name} must be a file, got the folder {path}")
        if not path.parent.is_dir():
            raise ValueError(f"{name}'s folder {path.parent} does not exist")
        return path

    save_to = None if checkpoint is None else as_path(checkpoint, "checkpoint")
    if resume is False:
        return save_to, None
    if resume is True:
        if save_to is None:
            raise ValueError("resume=True needs checkpoint=path: the file to resume from")
        return save_to, save_to if _ckpt.exists(save_to) else None
    resume_from = as_path(resume, "resume")
    if not _ckpt.exists(resume_from):
        raise FileNotFoundError(f"resume: no checkpoint at {resume_from} (use resume=True with "
                                f"checkpoint=path to start from scratch when it is missing)")
    return save_to or resume_from, resume_from


def _resume(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler, batches,
            epochs: int, objective: Objective | None = None) -> tuple[list[dict], int]:
    """Restore a run from the checkpoint at `path`; its history and the epochs already done."""
    state = _ckpt.load(path)
    done = state["epoch"]
    if done > epochs:
        raise ValueError(f"epochs={epochs} is fewer than the {done} epochs already done in the "
                         f"checkpoint {path}")
    # check everything before loading anything
    _ckpt.check_same_model(model, state["model"], path)
    if (scheduler is None) != (state["scheduler"] is None):
        has = "has" if state["scheduler"] is not None else "has no"
        raise ValueError(f"resume: the checkpoint {path} {has} scheduler state, and fit was "
                         f"given scheduler={'None' if scheduler is None else 'a scheduler'}")
    _ckpt.check_classes(state, path, optimizer=optimizer, scheduler=scheduler)
    _ckpt.check_same_optimizer(optimizer, state["optimizer"], path)
    _ckpt.check_rng(state["rng"], batches, objective)
    model.load_state_dict(state["model"])
    try:
        optimizer.load_state_dict(state["optimizer"])
    except (ValueError, KeyError) as err:
        raise ValueError(f"resume: the optimizer does not match the checkpoint {path}'s: "
                         f"{err}") from None
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    _ckpt.restore_rng(state["rng"], batches, objective)
    return list(state["history"]), done


def evaluate(model: nn.Module, data, *, device: str | torch.device | None = None,
             batch_size: int = _EVAL_BATCH) -> float:
    """Accuracy of `model` on `data` (an ``(x, y)`` pair or a DataLoader), in eval mode.

    The train/eval mode of every submodule is restored afterwards. A model whose output is not
    logits of shape (N, K) raises a ValueError that says so, and so do NaN or infinite images
    (whose NaN logits would otherwise count as class 0), as in
    `robustlab.evaluate.robust_accuracy`.
    """
    return _accuracy(model, data, "data", device, batch_size)


def _accuracy(model: nn.Module, data, name: str, device, batch_size: int) -> float:
    """`evaluate`, naming `data` as `name` in its errors (fit says eval_data)."""
    if device is not None:
        model.to(device)
    dev = model_device(model)
    hits, count, classes = 0, 0, 0
    # the first batch holding a non-finite pixel, and the first with a label outside [0, K),
    # tracked on the device and read with the hits once at the end: no host sync per batch
    # (`correct` would read each batch's label range on the host)
    first_bad = torch.full((), -1, dtype=torch.long, device=dev)
    first_bad_label = first_bad.clone()
    with eval_mode(model):
        for batch, (x, y) in enumerate(_batches(data, batch_size, shuffle=False, seed=0)):
            x, y = x.to(dev or x.device), y.to(dev or x.device)
            first_bad = _mark_first(first_bad, ~torch.isfinite(x).all(), batch)
            logits = predict(model, x, batch_size=batch_size)
            classes = logits.shape[1]
            first_bad_label = _mark_first(first_bad_label, ((y < 0) | (y >= classes)).any(), batch)
            hits = hits + (logits.argmax(1) == y).sum()
            count += len(x)
    if count == 0:
        raise ValueError(f"{name} is empty")
    hits, bad, bad_label = torch.stack([torch.as_tensor(hits, device=first_bad.device), first_bad,
                                        first_bad_label]).tolist()
    if bad >= 0:
        raise ValueError(f"{name} holds NaN or infinite images (batch {bad + 1}): accuracy on "
                         f"them is meaningless (NaN logits count as class 0)")
    if bad_label >= 0:
        raise ValueError(f"{name} holds labels outside [0, {classes}) (batch {bad_label + 1}): "
                         f"the model gives {classes} logits")
    return hits / count

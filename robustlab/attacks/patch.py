"""Adversarial patches: one small square of pixels that, pasted anywhere, changes the label.

A patch is not a norm-bounded perturbation: it replaces a ``size x size`` square of the image
outright, with any colours in [0, 1], and it is universal (one patch for all images) and
placed at a random position, the physical-world threat of a sticker on a scene. ``patch``
learns it, ``apply_patch`` pastes it, ``patch_success`` measures it on unseen images at random
positions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_images, check_positive
from .._model import check_attack_inputs, correct, eval_mode, frozen, logits_of, predict
from .._random import draw_device


def check_patch(patch, x: torch.Tensor, name: str = "patch") -> torch.Tensor:
    """A square patch (C, s, s) in [0, 1] with x's channels, dtype and device, no larger than x."""
    patch = check_images(patch, name, ndim=None)
    if patch.dim() != 3 or patch.shape[1] != patch.shape[2]:
        raise ValueError(f"{name} must have shape (C, size, size), got {tuple(patch.shape)}")
    if patch.shape[0] != x.shape[1]:
        raise ValueError(f"{name} has {patch.shape[0]} channels but x has {x.shape[1]}")
    if patch.shape[1] > min(x.shape[2:]):
        raise ValueError(f"{name} of size {patch.shape[1]} does not fit images of size "
                         f"{tuple(x.shape[2:])}")
    if patch.device != x.device:
        raise ValueError(f"{name} is on {patch.device} but x is on {x.device}")
    if patch.dtype != x.dtype:
        raise TypeError(f"{name} has dtype {patch.dtype} but x has {x.dtype}")
    return patch


def check_size(size, x: torch.Tensor) -> int:
    """The side of a square patch: an int in [1, min(H, W)]."""
    check_positive(size, "size", integer=True)
    if size > min(x.shape[2:]):
        raise ValueError(f"size must be at most min(H, W) = {min(x.shape[2:])}, got {size}")
    return size


def random_positions(n: int, size: int, shape: tuple[int, int], device: torch.device,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """(n, 2) top-left corners (row, column), each uniform over the positions where a
    ``size x size`` square fits in an image of `shape` (H, W); drawn on the generator's device,
    returned on `device`."""
    dev = draw_device(generator, device)
    rows = torch.randint(0, shape[0] - size + 1, (n,), generator=generator, device=dev)
    cols = torch.randint(0, shape[1] - size + 1, (n,), generator=generator, device=dev)
    return torch.stack([rows, cols], 1).to(device)


def place(x: torch.Tensor, patch: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """`x` with `patch` pasted at `positions` (unchecked; differentiable in patch and x)."""
    s, (h, w) = patch.shape[1], x.shape[2:]
    r = torch.arange(h, device=x.device) - positions[:, :1]  # (N, H): row inside the patch
    c = torch.arange(w, device=x.device) - positions[:, 1:]  # (N, W)
    inside = ((r >= 0) & (r < s))[:, :, None] & ((c >= 0) & (c < s))[:, None, :]  # (N, H, W)
    pasted = patch[:, r.clamp(0, s - 1)[:, :, None], c.clamp(0, s - 1)[:, None, :]]  # (C, N, H, W)
    return torch.where(inside[:, None], pasted.transpose(0, 1), x)


def apply_patch(x: torch.Tensor, patch: torch.Tensor, positions: torch.Tensor | None = None, *,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Paste `patch` into every image of `x`: the patch operator A(p, x, l) of Brown et al.

    Brown, Mané, Roy, Abadi and Gilmer, "Adversarial Patch" (2017), section 2: A(p, x, l)
    replaces the pixels of x under location l by the patch p and leaves every other pixel as
    it was. Nothing is blended or clipped: x and p both lie in [0, 1], so the result does too.

    Arguments:
        x: images (N, C, H, W) in [0, 1].
        patch: (C, s, s) in [0, 1], with x's channels, dtype and device, s <= min(H, W).
        positions: (N, 2) integer top-left corners (row, column) on x's device, each with
            0 <= row <= H - s and 0 <= column <= W - s; None draws them uniformly at random.
        generator: for the random positions (drawn on its device, see `_random.draw_device`).
    Returns the patched images, a new tensor of x's shape, dtype and device.
    """
    x = check_images(x)
    patch = check_patch(patch, x)
    s = patch.shape[1]
    if positions is None:
        positions = random_positions(len(x), s, x.shape[2:], x.device, generator)
    else:
        if not isinstance(positions, torch.Tensor) or positions.dtype.is_floating_point \
                or positions.dtype == torch.bool:
            raise TypeError(f"positions must be an integer tensor of shape (N, 2), got "
                            f"{getattr(positions, 'dtype', type(positions).__name__)}")
        if positions.shape != (len(x), 2):
            raise ValueError(f"positions must have shape ({len(x)}, 2) to match x, got "
                             f"{tuple(positions.shape)}")
        if positions.device != x.device:
            raise ValueError(f"positions is on {positions.device} but x is on {x.device}")
        limit = torch.tensor([x.shape[2] - s, x.shape[3] - s], device=x.device)
        if ((positions < 0) | (positions > limit)).any():
            raise ValueError(f"positions must place the patch inside the image: rows in "
                             f"[0, {x.shape[2] - s}], columns in [0, {x.shape[3] - s}]")
        positions = positions.long()
    return place(x, patch, positions)


def target_labels(y: torch.Tensor, targeted: bool, target: int | None,
                  num_classes: int | None = None) -> tuple[torch.Tensor, bool]:
    """The labels the loss reads and whether the attack is targeted: `target` (one class for
    every image) implies targeted; targeted=True without it reads the targets from y."""
    if target is None:
        return y, bool(targeted)
    if isinstance(target, bool) or not isinstance(target, int):
        raise TypeError(f"target must be an int class index, got {type(target).__name__}")
    if target < 0 or (num_classes is not None and target >= num_classes):
        bound = f"[0, {num_classes})" if num_classes is not None else ">= 0"
        raise ValueError(f"target must be a class index in {bound}, got {target}")
    return torch.full_like(y, target), True


def patch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, size: int, steps: int = 500,
          lr: float = 0.05, batch_size: int = 128, targeted: bool = False,
          target: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """A universal square adversarial patch, learned over many images at random positions.

    Brown, Mané, Roy, Abadi and Gilmer, "Adversarial Patch" (2017), the objective of section 2,
    an expectation over transformation (Athalye et al.) of the patch's location:
        p* = argmax_p  E_{(x, y) ~ X, l ~ L} [ log Pr(target | A(p, x, l)) ]      (targeted)
        p* = argmax_p  E_{(x, y) ~ X, l ~ L} [ CE(model(A(p, x, l)), y) ]        (untargeted)
    where A(p, x, l) pastes p with its top-left corner at l (`apply_patch`) and L is uniform
    over the positions where the patch fits. Each step draws a minibatch of `x` (random passes
    over the set) and one position per image, and takes an Adam step on p, then clips p to
    [0, 1]. Simplification: the paper also varies rotation and scale; here only the location.

    Arguments:
        x, y: training images (N, C, H, W) in [0, 1] and their labels (or, with targeted=True
            and no `target`, the target class of each image).
        size: side s of the square patch, 1 <= s <= min(H, W).
        steps: Adam steps, one minibatch each.
        lr: Adam's step size (pixels lie in [0, 1]).
        batch_size: images per step.
        targeted: maximise the log-probability of the target class instead of the loss.
        target: one target class for every image (Brown et al.'s "toaster"); implies targeted,
            and y then holds the true labels, which the loss does not read.
        generator: seeds the initial patch (uniform in [0, 1]), the minibatches and the
            positions; draws happen on its device.
    Returns the patch (C, s, s) in [0, 1], with x's dtype and device; paste it with
    `apply_patch`, measure it with `patch_success`.
    """
    x, y, _, _ = check_attack_inputs(model, x, y)
    size = check_size(size, x)
    for value, name in ((steps, "steps"), (batch_size, "batch_size")):
        check_positive(value, name, integer=True)
    check_positive(lr, "lr")
    labels, targeted = target_labels(y, targeted, target)
    dev = draw_device(generator, x.device)
    p = torch.rand(x.shape[1], size, size, generator=generator, device=dev).to(x).requires_grad_(True)
    opt = torch.optim.Adam([p], lr=lr)
    order = torch.empty(0, dtype=torch.long, device=dev)
    with frozen(model):
        for step in range(steps):
            if len(order) == 0:  # a fresh random pass over the training set
                order = torch.randperm(len(x), generator=generator, device=dev)
            idx, order = order[:batch_size].to(x.device), order[batch_size:]
            where = random_positions(len(idx), size, x.shape[2:], x.device, generator)
            xp = place(x[idx], p, where)
            # check the logits and labels once: the label check waits for the device
            z = logits_of(model, xp, labels[idx]) if step == 0 else model(xp)
            ce = F.cross_entropy(z, labels[idx])
            loss = ce if targeted else -ce  # minimised: -log Pr(target), or -CE(y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                p.clamp_(0, 1)
    return p.detach()


def patch_success(model: nn.Module, x: torch.Tensor, y: torch.Tensor, patch: torch.Tensor, *,
                  trials: int = 10, targeted: bool = False, target: int | None = None,
                  batch_size: int = 512, generator: torch.Generator | None = None) -> float:
    """Success rate of a patch on images at random positions: the measure of Brown et al.

    Brown et al., "Adversarial Patch" (2017), section 3: the fraction of images whose label the
    patch changes (or sets to the target), averaged over random placements. Exactly, with `trials` independent
    positions l_t drawn uniformly per image and per trial (`apply_patch`), and f the model's
    label:
        untargeted:  mean over t and over {i : f(x_i) = y_i} of [f(A(p, x_i, l_t)) != y_i]
        target=k:    mean over t and over {i : f(x_i) = y_i != k} of [f(A(p, x_i, l_t)) = k]
        targeted=True, y holding the targets:  mean over t and all i of [f(A(p, x_i, l_t)) = y_i]
    so an image the model already gets wrong (or already calls the target) is not counted as
    a success. Pass images and positions the patch was not trained on to measure how it
    generalises. The model runs in eval mode and is left as found.

    Arguments:
        x, y: images (N, C, H, W) in [0, 1] and their labels (targets with targeted=True and no
            `target`).
        patch: (C, s, s) in [0, 1] with x's channels, dtype and device.
        trials: independent random placements per image.
        targeted, target: as for `patch`.
        batch_size: images per forward pass.
        generator: for the positions (drawn on its device).
    Returns the success rate, a float in [0, 1] (0 when no image counts).
    """
    x, y, _, _ = check_attack_inputs(model, x, y)
    patch = check_patch(patch, x)
    check_positive(trials, "trials", integer=True)
    check_positive(batch_size, "batch_size", integer=True)
    with eval_mode(model):
        counted = correct(model, x, y, batch_size=batch_size)  # checks y against K
        num_classes = predict(model, x[:1]).shape[1]
        labels, targeted = target_labels(y, targeted, target, num_classes)
        if target is not None:
            counted &= y != target
        elif targeted:
            counted = torch.ones_like(counted)
        hits = torch.zeros((), dtype=torch.long, device=x.device)
        for _ in range(trials):
            where = random_positions(len(x), patch.shape[1], x.shape[2:], x.device, generator)
            pred = predict(model, place(x, patch, where), batch_size=batch_size).argmax(1)
            hit = pred == labels if targeted else pred != labels
            hits += (hit & counted).sum()
        n = counted.sum()
    total = (n * trials).item()
    return hits.item() / total if total else 0.0


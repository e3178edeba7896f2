"""Datasets: the embedded scikit-learn digits, generated traffic lights and colour digits, optional
torchvision sets.

Everything here returns pixel-space tensors: images ``(N, C, H, W)`` float in ``[0, 1]`` and
labels ``(N,)`` long. Nothing in the embedded path touches the network.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from ._checks import check_bool, check_positive, check_seed

SPLITS = ("train", "test")
DIGITS_TEST_SIZE = 360
TRAFFIC_LIGHT_CLASSES = ("red", "amber", "green")
# The smallest housing is 0.22 * size wide and 2.6 times as tall, so its three lamps sit
# 0.19 * size apart: from size 8 up they are at least 1.5 pixels apart and each lamp covers at
# least one pixel of its own; below that neighbouring lamps blur into the same pixels.
TRAFFIC_LIGHT_MIN_SIZE = 8
# Colour digits: each glyph covers 0.6-0.8 of the image side (about 19-26 pixels at size 32), so
# below 16 pixels a stroke of the 8x8 source would be thinner than one pixel.
COLOUR_DIGITS_MIN_SIZE = 16
TORCHVISION_SETS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "cifar10": "CIFAR10"}


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return split


@functools.cache
def _digits_arrays():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]  # 0..16 grey levels -> [0, 1]
    return train_test_split(x, d.target.astype(np.int64), test_size=DIGITS_TEST_SIZE,
                            random_state=0, stratify=d.target)


def digits(split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """The scikit-learn handwritten digits: 8x8 grey images of 0-9, a fixed stratified split.

    Returns ``(x, y)``: ``x`` float ``(N, 1, 8, 8)`` in [0, 1], ``y`` long ``(N,)``;
    1,437 training and 360 test images (seed 0). Ships with scikit-learn: no download.
    """
    x_tr, x_te, y_tr, y_te = _digits_arrays()
    x, y = (x_tr, y_tr) if _check_split(split) == "train" else (x_te, y_te)
    return torch.from_numpy(x.copy()), torch.from_numpy(y.copy())


def _generated_split(split: str, n, size, seed: int, *, counts: tuple[int, int], min_size: int,
                     why: str) -> tuple[int, torch.Generator]:
    """The checked arguments of a generated set: its size `n` (default `counts` for train and
    test) and the generator it draws from, seeded apart for the two splits."""
    _check_split(split)
    n = check_positive(n if n is not None else counts[split == "test"], "n", integer=True)
    check_positive(size, "size", integer=True)
    if size < min_size:
        raise ValueError(f"size must be >= {min_size} ({why}), got {size}")
    return n, torch.Generator().manual_seed(check_seed(seed) * 2 + (split == "test"))


def _disc(h: int, w: int, cy, cx, r):
    """Soft-edged discs: (B, h, w) coverage in [0, 1] for centres (B,) and radii (B,)."""
    yy = torch.arange(h, dtype=torch.float32)[None, :, None]
    xx = torch.arange(w, dtype=torch.float32)[None, None, :]
    d = ((yy - cy[:, None, None]) ** 2 + (xx - cx[:, None, None]) ** 2).sqrt()
    return (r[:, None, None] + 0.5 - d).clamp(0, 1)


def traffic_lights(split: str = "train", n: int | None = None, size: int = 32,
                   seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A generated set of traffic-light images: red (0), amber (1) or green (2) lit.

    Each 3 x size x size image shows a dark housing with three lamps, top to bottom red,
    amber, green, at a random place and scale, on a random two-colour gradient background
    with noise; the lit lamp is bright and glows, the others are dim. It stands in for the
    traffic-light example of the tutorial (one changed pixel flips the decision).

    Returns ``(x, y)``: ``x`` float ``(n, 3, size, size)`` in [0, 1], ``y`` long ``(n,)``.
    The train split has 1,800 images and the test split 600 unless `n` says otherwise; the
    two splits are drawn from different seeds and so never share an image. `size` must be an
    int of at least 8 (`TRAFFIC_LIGHT_MIN_SIZE`): smaller, the three lamps share pixels.
    `seed` is an int in [0, 2**32), as for `robustlab.seed_everything`.
    """
    n, g = _generated_split(split, n, size, seed, counts=(1800, 600), min_size=TRAFFIC_LIGHT_MIN_SIZE,
                            why="smaller, the three lamps of a traffic light share pixels")
    rand = functools.partial(torch.rand, generator=g)
    s = size
    y = torch.randint(0, 3, (n,), generator=g)
    # background: vertical blend of two random colours, plus pixel noise
    top, bottom = rand(n, 3, 1, 1), rand(n, 3, 1, 1)
    t = torch.linspace(0, 1, s).view(1, 1, s, 1)
    img = top * (1 - t) + bottom * t + 0.06 * torch.randn(n, 3, s, s, generator=g)
    # housing: a dark box roughly 1 wide : 2.6 tall
    w = s * (0.22 + 0.18 * rand(n))
    h = w * 2.6
    x0 = rand(n) * (s - w)
    y0 = rand(n) * (s - h).clamp(min=0)
    xx = torch.arange(s).view(1, 1, s)
    yy = torch.arange(s).view(1, s, 1)
    box = ((xx >= x0.view(-1, 1, 1)) & (xx < (x0 + w).view(-1, 1, 1))
           & (yy >= y0.view(-1, 1, 1)) & (yy < (y0 + h).view(-1, 1, 1))).float()
    housing = 0.08 + 0.1 * rand(n, 3, 1, 1)
    img = img * (1 - box[:, None]) + housing * box[:, None]
    colours = torch.tensor([[1.0, 0.1, 0.05], [1.0, 0.7, 0.0], [0.1, 1.0, 0.3]])
    r = w * 0.32
    cx = x0 + w / 2
    for lamp in range(3):
        cy = y0 + h * (lamp + 0.5) / 3
        lit = (y == lamp).float()
        brightness = (0.25 + 0.75 * lit).view(-1, 1, 1, 1)
        disc = _disc(s, s, cy, cx, r)[:, None]
        glow = _disc(s, s, cy, cx, r * 1.8)[:, None] * lit.view(-1, 1, 1, 1) * 0.35
        colour = colours[lamp].view(1, 3, 1, 1) * brightness
        img = img * (1 - disc) + colour * disc
        img = img + glow * colours[lamp].view(1, 3, 1, 1)
    return img.clamp(0, 1), y


def _smooth_noise(n: int, cells: int, size: int, g: torch.Generator) -> torch.Tensor:
    """Colour noise with `cells` x `cells` independent values, smoothly resized: (n, 3, size, size)."""
    z = torch.rand(n, 3, cells, cells, generator=g) - 0.5
    return F.interpolate(z, size=(size, size), mode="bicubic", align_corners=False)


def colour_digits(split: str = "train", n: int | None = None, size: int = 32,
                  seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A generated set of colour images of handwritten digits: 0-9 on textured backgrounds.

    Each 3 x size x size image takes one scikit-learn digit of the same split (`digits`),
    resizes it bilinearly to 0.6-0.8 of the image side at a random position, and paints it
    in light ink of a random tint, 0.25-0.5 above a random dark-to-mid colour, over a
    background of smooth colour texture (two scales, random strength) and pixel noise: the
    low contrast and texture of photographs, which the 8x8 digits lack. A normally trained
    network classifies these images well and is fooled by changes too small to see (zoo
    model ``colour-digits-cnn``, lesson 01 section 7).

    Returns ``(x, y)``: ``x`` float ``(n, 3, size, size)`` in [0, 1], ``y`` long ``(n,)``.
    The train split has 3,000 images and the test split 1,000 unless `n` says otherwise; the
    splits take their glyphs from the digits' own train and test splits and draw everything
    else from different seeds, so no image is in both. `size` must be an int of at least 16
    (`COLOUR_DIGITS_MIN_SIZE`). `seed` is an int in [0, 2**32), as for
    `robustlab.seed_everything`.
    """
    n, g = _generated_split(split, n, size, seed, counts=(3000, 1000), min_size=COLOUR_DIGITS_MIN_SIZE,
                            why="smaller, a digit's strokes are thinner than a pixel")
    glyphs, labels = digits(split)
    pick = torch.randint(0, len(glyphs), (n,), generator=g)
    glyph, y = glyphs[pick], labels[pick]
    # place the glyph: scale s of the side, shifted so that it stays inside the image; the
    # affine grid maps output coordinates to the glyph's, hence the inverse scale
    scale = 0.6 + 0.2 * torch.rand(n, generator=g)
    shift = (torch.rand(n, 2, generator=g) * 2 - 1) * (1 - scale)[:, None]
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / scale
    theta[:, :, 2] = -shift / scale[:, None]
    grid = F.affine_grid(theta, [n, 1, size, size], align_corners=False)
    ink = F.grid_sample(glyph, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # background: a colour, texture at two scales of random strength, pixel noise
    base = 0.05 + 0.5 * torch.rand(n, 3, 1, 1, generator=g)
    strength = 0.2 * torch.rand(n, 1, 1, 1, generator=g)
    background = base + strength * (_smooth_noise(n, 4, size, g) + _smooth_noise(n, 9, size, g))
    background = background + 0.03 * torch.randn(n, 3, size, size, generator=g)
    # ink: lighter than the background in every channel, tinted, by a random contrast
    tint = (1 + 0.3 * torch.randn(n, 3, 1, 1, generator=g)).clamp(min=0.1)
    tint = tint / tint.norm(dim=1, keepdim=True) * 3 ** 0.5
    contrast = 0.25 + 0.25 * torch.rand(n, 1, 1, 1, generator=g)
    return (background + contrast * tint * ink).clamp(0, 1), y


def _load_torchvision(name: str, split: str, root, download: bool):
    try:
        import torchvision  # noqa: F401  (any failure, not only ImportError: see README)
        from torchvision import datasets
    except Exception as e:  # PyPI's torchvision raises RuntimeError beside a CPU-only torch
        raise RuntimeError(
            f"load({name!r}) needs torchvision, which could not be imported "
            f"({type(e).__name__}: {e}). Install the 'vision' extra "
            f"(pip install 'robustlab[vision]') or use load('digits'), which needs nothing."
        ) from e
    root = Path(root) if root is not None else Path.home() / ".cache" / "robustlab"
    cls = getattr(datasets, TORCHVISION_SETS[name])
    try:
        ds = cls(str(root), train=split == "train", download=download)
    except Exception as e:
        how = "could not be downloaded" if download else "download=False"
        raise RuntimeError(f"load({name!r}): the files are not under {root} and {how} "
                           f"({type(e).__name__}: {e}). Put them there or pass root=.") from e
    data = torch.as_tensor(np.asarray(ds.data))
    x = (data.permute(0, 3, 1, 2) if data.dim() == 4 else data[:, None]).float() / 255.0
    return x.contiguous(), torch.as_tensor(np.asarray(ds.targets), dtype=torch.long)


def load(name: str, split: str = "train", root=None, *,
         download: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Load a dataset by name as pixel-space tensors ``(x, y)``.

    ``"digits"``, ``"traffic-lights"`` and ``"colour-digits"`` are embedded and always work. ``"mnist"``,
    ``"fashion-mnist"`` and ``"cifar10"`` need torchvision and either the files under
    `root` (default ``~/.cache/robustlab``) or a network (never touched with
    ``download=False``); otherwise a RuntimeError says why.
    """
    _check_split(split)
    if name == "digits":
        return digits(split)
    if name == "traffic-lights":
        return traffic_lights(split)
    if name == "colour-digits":
        return colour_digits(split)
    if name in TORCHVISION_SETS:
        return _load_torchvision(name, split, root, check_bool(download, "download"))
    known = ["digits", "traffic-lights", "colour-digits", *TORCHVISION_SETS]
    raise ValueError(f"name must be one of {known}, got {name!r}")


def loader(x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 128, shuffle: bool = False,
           seed: int = 0) -> DataLoader:
    """A DataLoader over tensors; shuffling uses its own seeded generator (reproducible)."""
    if len(x) != len(y):
        raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
    g = torch.Generator().manual_seed(check_seed(seed)) if check_bool(shuffle, "shuffle") else None
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle, generator=g)

"""Seeding, device choice and the figures a lesson reports to the course runner."""

from __future__ import annotations

import json
import os
import random

import numpy as np
import torch

from ._checks import check_seed

FIGURES_MIME = "application/vnd.robustlab.figures+json"


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA); return a torch Generator seeded the same.

    A lesson that calls this first prints the same numbers every run on the same machine.
    """
    check_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    return torch.Generator().manual_seed(seed)


def generator(seed: int = 0, device: str | torch.device | None = None) -> torch.Generator:
    """A fresh torch Generator seeded with `seed`, on `device` (the CPU by default).

    Hand one to every random attack or start: each result is then reproducible on its own,
    whatever ran before it. Draws happen on the generator's device (robustlab/_random.py):
    a CPU generator gives the same numbers whatever the data's device (the reproducible mode,
    each draw copied to the data), while ``generator(seed, device=x.device)`` draws on the
    GPU without a copy, reproducible on that device only (CUDA draws other numbers from the
    same seed). Without any generator, a method draws on the data's device.

    Arguments:
        seed: an int in [0, 2**32).
        device: where the generator draws; the CPU if None.
    """
    check_seed(seed)
    return torch.Generator(device=device or "cpu").manual_seed(seed)


def default_device(device: str | torch.device | None = None) -> torch.device:
    """`device` if given, else CUDA when available, else the CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def report(**figures) -> dict:
    """Show a lesson's key figures and hand them to `make course` (which reads this output).

    Values must be JSON-serialisable numbers or strings; floats are rounded to 4 digits.
    """
    clean = {k: round(float(v), 4) if isinstance(v, (float, np.floating)) else v
             for k, v in figures.items()}
    json.dumps(clean)  # fail here, in the lesson, if a value cannot be stored
    try:
        from IPython.display import display
        display({FIGURES_MIME: clean, "text/plain": ", ".join(f"{k} = {v}" for k, v in
                                                             clean.items())}, raw=True)
    except ImportError:
        print(clean)
    return clean

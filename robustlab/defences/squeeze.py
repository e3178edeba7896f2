"""Feature squeezing and its detector: flag an input whose prediction moves when it is squeezed.

Xu, Evans and Qi, "Feature squeezing: detecting adversarial examples in deep neural networks"
(NDSS 2018), section 4: a squeezer s (bit-depth reduction, median smoothing) removes detail a
legitimate input does not need but an adversarial perturbation does, so the model's softmax
p(.) moves far on adversarial inputs and little on legitimate ones. With several squeezers the
score is the largest L1 distance (their eq. in section 4.1, "joint detection"):

    score(x) = max_s || p(x) - p(s(x)) ||_1,

and x is flagged as adversarial when score(x) > T, the threshold chosen on legitimate inputs
so that at most a fraction `fpr` of them is flagged (their 5 %). ``calibrate_squeezing``
chooses T; the `SqueezeDetector` it returns scores and flags new inputs.

NaN must never switch the detector off (a NaN score compares False with any T, and a NaN T
flags nothing): NaN images are refused with an error naming the argument, a model that returns
NaN on the calibration images is refused, and a NaN score of a new input (a model that went
bad) is flagged as adversarial.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from .._checks import check_images, check_in_range, check_nonnegative, check_positive
from .._model import check_model, check_model_input, plain, predict
from .transforms import Transform, bit_depth, median_filter

__all__ = ["SqueezeDetector", "calibrate_squeezing", "default_squeezers", "squeeze_score"]


def default_squeezers() -> dict[str, Transform]:
    """Xu et al.'s joint detector for MNIST (their Table 3): 1-bit depth and a 2 x 2 median."""
    return {"bit_depth_1": partial(bit_depth, bits=1), "median_2x2": partial(median_filter, k=2)}


def _check_squeezers(squeezers) -> dict[str, Transform]:
    if not isinstance(squeezers, Mapping) or not squeezers:
        raise ValueError(f"squeezers must be a non-empty dict of name -> transform, got "
                         f"{squeezers!r}")
    for name, squeeze in squeezers.items():
        if not callable(squeeze):
            raise TypeError(f"squeezers[{name!r}] must be callable, got {type(squeeze).__name__}")
    return dict(squeezers)


def _check_inputs(model: nn.Module, x, name: str = "x") -> torch.Tensor:
    """Images (N, C, H, W) in [0, 1] with no NaN, of the model's device and dtype."""
    check_model(model)
    x = plain(check_images(x, name))
    check_model_input(model, x, name)
    return x


def squeeze_score(model: nn.Module, x: torch.Tensor, squeezers: Mapping[str, Transform] | None = None,
                  *, batch_size: int = 512) -> torch.Tensor:
    """Xu et al.'s score max_s ||softmax(model(x)) - softmax(model(s(x)))||_1 per example (N,).

    The model runs in eval mode without gradients and is left as found; squeezers default to
    `default_squeezers`. Scores lie in [0, 2], or are NaN where the model returns NaN. Images
    holding NaN or lying outside [0, 1] raise a ValueError.
    """
    x = _check_inputs(model, x)
    squeezers = _check_squeezers(default_squeezers() if squeezers is None else squeezers)
    check_positive(batch_size, "batch_size", integer=True)
    return _scores(model, x, squeezers, batch_size)


def _scores(model: nn.Module, x: torch.Tensor, squeezers: dict[str, Transform],
            batch_size: int) -> torch.Tensor:
    """`squeeze_score` of checked arguments."""
    with torch.no_grad():
        p = predict(model, x, batch_size=batch_size).softmax(1)
        scores = [(p - predict(model, squeeze(x), batch_size=batch_size).softmax(1)).abs().sum(1)
                  for squeeze in squeezers.values()]
    return torch.stack(scores).amax(0)


@dataclass
class SqueezeDetector:
    """A calibrated feature-squeezing detector: ``detector(x)`` flags (N,) bool, adversarial
    where ``squeeze_score(model, x, squeezers) > threshold`` or the score is NaN (the model
    returned NaN: nothing vouches for the input). The threshold must be a finite number >= 0."""

    model: nn.Module
    squeezers: dict[str, Transform]
    threshold: float
    fpr: float

    def __post_init__(self):
        # a NaN or infinite threshold would flag nothing
        self.threshold = check_nonnegative(self.threshold, "threshold")

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return squeeze_score(self.model, x, self.squeezers)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return ~(self.score(x) <= self.threshold)  # a NaN score compares False: flagged


def calibrate_squeezing(model: nn.Module, x_clean: torch.Tensor, *, fpr: float = 0.05,
                        squeezers: Mapping[str, Transform] | None = None) -> SqueezeDetector:
    """Choose the detection threshold on legitimate inputs at false positive rate `fpr`.

    Xu et al. section 4.1: T is the score that a fraction `fpr` of the legitimate training
    inputs exceeds. Here T is the (floor(fpr * n) + 1)-th largest score of the n inputs of
    `x_clean`, so at most floor(fpr * n) of them score strictly above it: the detector's false
    positive rate on `x_clean` is at most `fpr` exactly (on new legitimate inputs, about
    `fpr`, up to sampling error).

    Arguments:
        model: the classifier to protect (logits (N, K)); run in eval mode, left as found.
        x_clean: legitimate images (N, C, H, W) in [0, 1], ideally not those the detector is
            tested on. NaN images raise a ValueError, and so does a model that returns NaN on
            them: either would make the threshold NaN, which flags nothing.
        fpr: the target false positive rate, in [0, 1).
        squeezers: dict of name -> transform; `default_squeezers` if None.
    """
    check_in_range(fpr, "fpr", 0, 1, high_open=True)
    x_clean = _check_inputs(model, x_clean, "x_clean")
    squeezers = _check_squeezers(default_squeezers() if squeezers is None else squeezers)
    scores = _scores(model, x_clean, squeezers, batch_size=512)
    if scores.isnan().any():
        raise ValueError("model returns NaN on some of x_clean: no threshold can be calibrated")
    allowed = int(fpr * len(scores))  # clean inputs that may score above the threshold
    threshold = scores.sort(descending=True).values[allowed].item()
    return SqueezeDetector(model, squeezers, threshold, fpr)

"""The shared types of robustlab.verify: `Bounds` from the bounding verifiers, `Verdict` from the
complete ones, and `margin_spec`, the specification "class y beats every other class"."""

from __future__ import annotations

from dataclasses import dataclass

import torch

STATUSES = ("verified", "falsified", "unknown")


@dataclass(frozen=True)
class Bounds:
    """Elementwise bounds ``lower <= f(x') <= upper`` for every x' in the input set.

    Shapes ``(N, K)`` on the logits or ``(N, S)`` on a specification ``C @ logits``. Unpacks as
    ``lower, upper = bounds``. Bounds computed along two float paths may cross by rounding where
    they meet (eps = 0); a crossing beyond ``1e-5 * (1 + |upper|)`` is refused as a bug.
    """

    lower: torch.Tensor
    upper: torch.Tensor

    def __post_init__(self):
        if not isinstance(self.lower, torch.Tensor) or not isinstance(self.upper, torch.Tensor):
            raise TypeError("lower and upper must be tensors")
        if self.lower.shape != self.upper.shape or self.lower.dim() != 2:
            raise ValueError(f"lower and upper must have one shape (N, K), got "
                             f"{tuple(self.lower.shape)} and {tuple(self.upper.shape)}")
        crossed = self.lower - self.upper - 1e-5 * (1 + self.upper.abs())
        if self.lower.numel() and (crossed > 0).any():
            raise ValueError(f"lower exceeds upper by up to {(self.lower - self.upper).max().item():.3g}")

    def __iter__(self):
        return iter((self.lower, self.upper))

    @property
    def width(self) -> torch.Tensor:
        """``upper - lower``, (N, K): how loose the bounds are (0 when exact)."""
        return self.upper - self.lower

    def contains(self, z: torch.Tensor, tol: float = 1e-5) -> torch.Tensor:
        """Per example (N,): whether every entry of `z` (N, K) lies within the bounds, up to
        ``tol * (1 + |z|)`` for rounding."""
        slack = tol * (1 + z.abs())
        return ((z >= self.lower - slack) & (z <= self.upper + slack)).all(1)


@dataclass(frozen=True)
class Verdict:
    """The answer of a complete verifier for one example.

    Arguments:
        status: "verified" (no adversarial example in the ball), "falsified" (one found) or
            "unknown" (a time or budget limit ran out first; never a silent guess).
        counterexample: the adversarial input (C, H, W) when falsified, else None; the
            verifier has re-checked that the model misclassifies it and that it lies in the ball.
        reason: why the answer is unknown (or a note), else None.
        seconds: time spent on this example.
    """

    status: str
    counterexample: torch.Tensor | None = None
    reason: str | None = None
    seconds: float = 0.0

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {list(STATUSES)}, got {self.status!r}")
        if (self.status == "falsified") != isinstance(self.counterexample, torch.Tensor):
            raise ValueError("a counterexample tensor is required when falsified, and only then")
        if self.status == "unknown" and not self.reason:
            raise ValueError("an unknown verdict needs a reason")

    @property
    def verified(self) -> bool:
        return self.status == "verified"


def margin_spec(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The specification C (N, K-1, K) whose rows are e_y - e_j for every j != y: a lower bound
    > 0 on every row of ``C @ logits`` proves that no input of the set changes the class from y."""
    k = int(num_classes)
    if k < 2:
        raise ValueError(f"num_classes must be >= 2 for the margins z_y - z_j, got {k} (a model with "
                         "one logit has no other class to beat; give a binary classifier two logits)")
    eye = torch.eye(k, device=y.device)
    return eye[y][:, None, :] - eye[other_classes(y, k)]  # (N, K-1, K): e_y - e_j


def other_classes(y: torch.Tensor, k: int) -> torch.Tensor:
    """The classes j != y of each row in increasing order (N, K-1): j, shifted past y.

    Index arithmetic instead of a boolean mask, whose size the host must read: training builds
    the margins every batch."""
    j = torch.arange(k - 1, device=y.device)[None, :]
    return j + (j >= y[:, None]).long()

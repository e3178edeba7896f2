"""Regularisers of the weights for robustness: Lipschitz control of each layer (spectral
normalisation, Parseval networks, Björck orthonormal layers with GroupSort), the weight
correlation penalty, and early stopping on robust validation accuracy.

| name | paper | what |
| --- | --- | --- |
| `spectral_normalised`, `spectral_norms` | Miyato et al. 2018 | W / sigma_max(W) per layer |
| `parseval_retraction`, `parseval` | Cisse et al. 2017 | W <- (1 + beta) W - beta W W^T W |
| `bjorck`, `BjorckLinear`, `GroupSort` | Anil et al. 2019 | orthonormal W, norm-preserving sort |
| `weight_correlation_penalty`, `weight_correlation` | Jin et al. 2020 | mean abs cosine between neurons |
| `BestRobust` | Rice et al. 2020 | keep the weights of the best robust validation epoch |

Layers are the model's `nn.Linear` and `nn.Conv1d/2d/3d`; a convolution's weight is read as
the matrix (out_channels, in_channels * kernel size), one row per filter, as
`torch.nn.utils.parametrizations.spectral_norm` reads it. (That matrix's spectral norm bounds
the convolution's Lipschitz constant only up to a factor of the kernel's area.)
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from .._checks import check_nonnegative, check_norm, check_positive
from .._model import model_device
from .._random import draw_device
from ..attacks import pgd
from ..train import Objective, _loss_and_logs, cross_entropy, evaluate

__all__ = ["BestRobust", "BjorckLinear", "GroupSort", "bjorck", "parseval", "parseval_retraction",
           "spectral_normalised", "spectral_norms", "weight_correlation",
           "weight_correlation_penalty"]

LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's Linear and Conv layers, by name; a model with none raises."""
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, LAYERS)]
    if not found:
        raise ValueError("model has no Linear or Conv layer to regularise")
    return found


def _matrix(weight: torch.Tensor) -> torch.Tensor:
    """A layer's weight as a matrix with one row per output unit (a view where possible)."""
    return weight.reshape(weight.shape[0], -1)


# --------------------------------------------------------------------------- spectral norm

def spectral_normalised(model: nn.Module, *, power_iterations: int = 1) -> nn.Module:
    """A copy of `model` with spectral normalisation, Miyato et al. (ICLR 2018), on every Linear
    and Conv layer: the layer uses W / sigma_max(W), sigma_max estimated by power iteration
    (`power_iterations` per training forward pass, 15 when the layer is wrapped; in eval mode
    the stored estimate is used). Each layer is then 1-Lipschitz in its matrix reading, and the
    network's Lipschitz constant is bounded by the product over its other layers. `model` is
    left as it was.
    """
    check_positive(power_iterations, "power_iterations", integer=True)
    _layers(model)
    out = copy.deepcopy(model)
    for _, layer in _layers(out):
        spectral_norm(layer, n_power_iterations=power_iterations)
    return out


@torch.no_grad()
def spectral_norms(model: nn.Module) -> dict[str, float]:
    """The spectral norm (largest singular value, by SVD) of each Linear and Conv layer's weight
    matrix, by layer name: the weight the layer uses, so after `spectral_normalised` about 1."""
    layers = _layers(model)
    sigmas = torch.stack([torch.linalg.matrix_norm(_matrix(m.weight).float(), ord=2)
                          for _, m in layers])
    return dict(zip((name for name, _ in layers), sigmas.tolist()))  # one read for all layers


# --------------------------------------------------------------------------- orthogonality

def _retract(w: torch.Tensor, beta: float) -> torch.Tensor:
    """One step (1 + beta) W - beta W W^T W: each singular value s -> (1 + beta) s - beta s^3,
    whose fixed points are 0 and 1 (Parseval's retraction; Björck's iteration at beta = 1/2)."""
    return (1 + beta) * w - beta * (w @ (w.mT @ w))


@torch.no_grad()
def parseval_retraction(model: nn.Module, *, beta: float = 3e-4) -> None:
    """Parseval networks, Cisse et al. (ICML 2017), eq. 3: after each gradient step, every
    Linear and Conv weight matrix W (rows: output units) is pulled towards the Stiefel
    manifold (orthonormal rows or columns, singular values 1) by

        W <- (1 + beta) W - beta W W^T W

    in place. ``beta = 3e-4`` is the paper's. (The paper retracts a random subset of rows for
    speed, and also keeps aggregation layers convex; here every row is retracted.)
    """
    beta = check_nonnegative(beta, "beta")
    for _, m in _layers(model):
        w = m.weight
        w.copy_(_retract(_matrix(w), beta).reshape(w.shape))


def parseval(optimizer: torch.optim.Optimizer, model: nn.Module, *,
             beta: float = 3e-4) -> torch.utils.hooks.RemovableHandle:
    """Run `parseval_retraction` on `model` after every ``optimizer.step()`` (an optimiser step
    hook, so it works with `fit` and with every loop of `robustlab.defences.loops`); returns
    the hook's handle (``.remove()`` detaches it)."""
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got "
                        f"{type(optimizer).__name__}")
    beta = check_nonnegative(beta, "beta")
    _layers(model)
    return optimizer.register_step_post_hook(lambda *_: parseval_retraction(model, beta=beta))


def bjorck(weight: torch.Tensor, *, iterations: int = 20) -> torch.Tensor:
    """Björck and Bowie's orthonormalisation, as used by Anil, Lucas and Grosse, "Sorting out
    Lipschitz function approximation" (ICML 2019), eq. 9 with order p = 1:

        A_{k+1} = A_k (I + Q_k / 2),  Q_k = I - A_k^T A_k

    from A_0 = W / sqrt(||W||_1 ||W||_inf) (an upper bound of sigma_max, so every singular
    value starts in (0, 1], where the iteration converges to 1). Returns the closest matrix
    with orthonormal columns (rows, for a wide W), differentiably. Convergence is quadratic
    near 1 but slow for tiny singular values: start from an orthogonal initialisation.
    """
    check_positive(iterations, "iterations", integer=True)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        raise ValueError("weight must be a matrix (a 2-d tensor)")
    bound = (weight.abs().sum(0).max() * weight.abs().sum(1).max()).sqrt()
    a = weight / bound.clamp_min(torch.finfo(weight.dtype).tiny)
    for _ in range(iterations):
        a = _retract(a, 0.5)
    return a


class BjorckLinear(nn.Module):
    """A linear layer whose weight is orthonormalised by `bjorck` in every forward pass (Anil et
    al. 2019): 1-Lipschitz, and gradient norm preserving when square. Orthogonal init."""

    def __init__(self, in_features: int, out_features: int, *, bias: bool = True,
                 iterations: int = 20):
        super().__init__()
        # named as nn.Linear names them: the Oracle reads a model's class count from the
        # out_features of its last layer
        self.in_features = check_positive(in_features, "in_features", integer=True)
        self.out_features = check_positive(out_features, "out_features", integer=True)
        self.iterations = check_positive(iterations, "iterations", integer=True)
        self.weight = nn.Parameter(nn.init.orthogonal_(torch.empty(out_features, in_features)))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def orthonormal_weight(self) -> torch.Tensor:
        return bjorck(self.weight, iterations=self.iterations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.orthonormal_weight(), self.bias)


class GroupSort(nn.Module):
    """GroupSort, Anil et al. 2019: the channels (dim 1) are cut into groups of `group_size`
    and each group is sorted (ascending). Its Jacobian is a permutation matrix, so it is
    1-Lipschitz and preserves gradient norms; ``group_size=2`` is MaxMin."""

    def __init__(self, group_size: int = 2):
        super().__init__()
        self.group_size = check_positive(group_size, "group_size", integer=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if c % self.group_size:
            raise ValueError(f"x has {c} channels, not a multiple of group_size="
                             f"{self.group_size}")
        groups = x.reshape(x.shape[0], c // self.group_size, self.group_size, *x.shape[2:])
        return groups.sort(dim=2).values.reshape(x.shape)


# --------------------------------------------------------------------------- weight correlation

def weight_correlation_penalty(model: nn.Module) -> torch.Tensor:
    """The weight correlation of Jin et al., "How does weight correlation affect the
    generalisation ability of deep neural networks?" (NeurIPS 2020), summed over layers:

        rho(W) = 1 / (n (n - 1)) sum_{i != j} |w_i^T w_j| / (||w_i|| ||w_j||)

    the mean absolute cosine between the weight vectors w_i of a layer's n output units (a
    filter's weights flattened; layers with one unit add 0). Differentiable in the weights.
    """
    total = None
    for _, m in _layers(model):
        w = _matrix(m.weight)
        n = w.shape[0]
        unit = w / w.norm(dim=1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)
        cos = (unit @ unit.T).abs()
        rho = (cos.sum() - cos.diagonal().sum()) / max(n * (n - 1), 1)
        total = rho if total is None else total + rho
    return total


def weight_correlation(objective: Objective = cross_entropy, *, weight: float = 1e-2) -> Objective:
    """An Objective for `fit`: `objective`'s loss plus ``weight * weight_correlation_penalty``
    (Jin et al. 2020's WCD regulariser). Logs `objective`'s logs and ``wcorr``."""
    weight = check_nonnegative(weight, "weight")
    if not callable(objective):
        raise TypeError(f"objective must be callable, got {type(objective).__name__}")

    def regularised(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        loss, logs = _loss_and_logs(objective(model, x, y))
        penalty = weight_correlation_penalty(model)
        return loss + weight * penalty, {**logs, "wcorr": penalty.detach()}

    return regularised


# --------------------------------------------------------------------------- data augmentation

def _check_shift(shift) -> int:
    if isinstance(shift, bool) or not isinstance(shift, int) or shift < 0:
        raise ValueError(f"shift must be a whole number of pixels >= 0, got {shift!r}")
    return shift


def random_shift(x: torch.Tensor, shift: int = 1, *, generator: torch.Generator | None = None
                 ) -> torch.Tensor:
    """Each image of x (N, C, H, W) moved by its own random (dy, dx), each in [-shift, shift],
    the pixels it uncovers set to 0: the translation augmentation of image classifiers."""
    shift = _check_shift(shift)
    if shift == 0:
        return x
    n, c, h, w = x.shape
    dev = draw_device(generator, x.device)
    dy, dx = (torch.randint(0, 2 * shift + 1, (n, 1), generator=generator, device=dev).to(x.device)
              for _ in range(2))
    rows = (dy + torch.arange(h, device=x.device))[:, None, :, None]  # into the padded image
    cols = (dx + torch.arange(w, device=x.device))[:, None, None, :]
    padded = F.pad(x, (shift, shift, shift, shift))
    return padded[torch.arange(n, device=x.device)[:, None, None, None],
                  torch.arange(c, device=x.device)[None, :, None, None], rows, cols]


def augmented(objective: Objective = cross_entropy, *, shift: int = 1,
              generator: torch.Generator | None = None) -> Objective:
    """An Objective for `fit`: `objective` on randomly shifted copies of each batch
    (`random_shift`), data augmentation as a regulariser (the tutorial's list beside dropout and
    weight decay, which are torch's `nn.Dropout` and `fit(weight_decay=...)`)."""
    shift = _check_shift(shift)
    if not callable(objective):
        raise TypeError(f"objective must be callable, got {type(objective).__name__}")

    def on_shifted(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        return objective(model, random_shift(x, shift, generator=generator), y)

    return on_shifted


# --------------------------------------------------------------------------- early stopping

class BestRobust:
    """Early stopping on robust validation accuracy, Rice, Wong and Kolter, "Overfitting in
    adversarially robust deep learning" (ICML 2020): robust test accuracy peaks soon after the
    first learning-rate decay and then falls while training loss keeps dropping, so keep the
    weights of the epoch with the best PGD accuracy on held-out data.

    An ``after_epoch`` callback for `fit` (and the loops): after each epoch it measures the
    accuracy under `robustlab.attacks.pgd` (eps, alpha, steps, norm; the same random start,
    from `seed`, every epoch) on `val_data` ``(x, y)``, writes it into the history row as
    ``robust_val_acc``, and keeps a copy of the weights when it is the best so far (ties keep
    the earlier epoch). With `patience`, training stops once that many epochs pass without a
    new best. After `fit`, ``restore(model)`` loads the best weights and returns their epoch.
    """

    def __init__(self, val_data, *, eps: float, alpha: float, steps: int, norm: str = "linf",
                 patience: int | None = None, seed: int = 0):
        if not (isinstance(val_data, (tuple, list)) and len(val_data) == 2
                and all(isinstance(t, torch.Tensor) for t in val_data)):
            raise TypeError("val_data must be an (x, y) pair of tensors")
        check_positive(eps, "eps")
        check_positive(alpha, "alpha")
        check_positive(steps, "steps", integer=True)
        if patience is not None:
            check_positive(patience, "patience", integer=True)
        self.val_data, self.patience, self.seed = val_data, patience, seed
        self.attack = dict(eps=eps, alpha=alpha, steps=steps, norm=check_norm(norm, ("linf", "l2", "l1")))
        self.best_acc, self.best_epoch, self.best_state = -1.0, None, None

    def __call__(self, model: nn.Module, row: dict) -> bool:
        device = model_device(model)
        x, y = (t.to(device) for t in self.val_data)
        x_adv = pgd(model, x, y, generator=torch.Generator().manual_seed(self.seed), **self.attack)
        acc = evaluate(model, (x_adv, y))
        row["robust_val_acc"] = acc
        if acc > self.best_acc:
            self.best_acc, self.best_epoch = acc, row["epoch"]
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return self.patience is not None and row["epoch"] - self.best_epoch >= self.patience

    def restore(self, model: nn.Module) -> int:
        """Load the best epoch's weights into `model`; return that epoch (counted from 1)."""
        if self.best_state is None:
            raise ValueError("BestRobust has seen no epoch yet: pass it to fit as after_epoch")
        model.load_state_dict(self.best_state)
        return self.best_epoch


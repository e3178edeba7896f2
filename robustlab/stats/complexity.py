"""Complexity measures that predict generalisation without a test set: the tutorial's Table 1
(after Jin et al., NeurIPS 2020) and the other measures it names (after Jiang et al.,
"Fantastic generalization measures and where to find them", ICLR 2020).

| key | function | definition |
| --- | --- | --- |
| GE | `generalisation_gap` | L_D(f) - L_S(f), test minus training loss |
| PFN | `frobenius_product` | prod_l ||W_l||_F |
| PSN | `spectral_product` | prod_l ||W_l||_2 |
| NoP | `parameter_count` | total number of parameters |
| SoSP | `spectral_sum` | NoP * sum_l ||W_l^0 - W_l||_2 |
| WC | `weight_correlation` | (1 / L) sum_l rho(w_l) |
| PB | `pac_bayes` | sum_l ||theta_l^0 - theta_l||_F^2 / (2 sigma_l^2) |
| PBC | `pac_bayes_correlation` | PB + sum_l g(w_l) |

Beyond the table: `distance_from_init` here, and in `robustlab.stats.generalisation`
`path_norm`, `sharpness`, `fisher_rao_norm`, `vc_dimension`, `vc_bound`, `steps_to_loss`,
`gradient_noise`; `measures` collects Table 1.

Layers l are the model's Linear and Conv1d/2d/3d modules in `named_modules` order; W_l is a
layer's weight read as the matrix (out, in * kernel size), one row per output unit (so a
convolution's spectral norm is that matrix's, not the convolution operator's); theta_l is the
layer's weight and bias together. Normalisation layers (BatchNorm, LayerNorm, GroupNorm) are
not layers here (their parameters count in NoP and in the whole-vector measures); any other
module holding parameters is refused by name. Every measure reads the weights in float64 and
leaves the model as found. `initial` is the model at initialisation, as a module or a state dict.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrize import ParametrizationList

from .._checks import check_choice, check_images, check_labels, check_positive
from .._model import check_model, check_model_input, eval_mode, predict

LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm)
SKIPPED = NORMS + (ParametrizationList,)  # a parametrised layer's .weight is read instead


# --------------------------------------------------------------------------- reading the layers

def layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's Linear and Conv layers by name; an error names any other parametrised module."""
    check_model(model)
    found = []
    for name, m in model.named_modules():
        if isinstance(m, LAYERS):
            found.append((name, m))
        elif not isinstance(m, SKIPPED) and any(True for _ in m.parameters(recurse=False)):
            raise ValueError(f"model holds parameters in {name or 'the model'} "
                             f"({type(m).__name__}): complexity measures read Linear and Conv "
                             "layers only (and skip BatchNorm/LayerNorm/GroupNorm)")
    if not found:
        raise ValueError("model has no Linear or Conv layer to measure")
    return found


def _weight(module: nn.Module) -> torch.Tensor:
    """A layer's weight in float64, read in eval mode: a parametrisation in training mode (spectral
    norm's power iteration) would update its buffers on every read."""
    with eval_mode(module):
        return module.weight.detach().double()


def _matrix(module: nn.Module) -> torch.Tensor:
    """A layer's weight as a float64 matrix with one row per output unit."""
    w = _weight(module)
    return w.reshape(w.shape[0], -1)


def _state(initial, name: str = "initial") -> Mapping[str, torch.Tensor]:
    """The initial weights as a state dict, from a module or a mapping."""
    if isinstance(initial, nn.Module):
        return initial.state_dict()
    if isinstance(initial, Mapping):
        return initial
    raise TypeError(f"{name} must be the initial model or its state dict, got {type(initial).__name__}")


def _initial(state: Mapping[str, torch.Tensor], key: str, like: torch.Tensor) -> torch.Tensor:
    """Parameter `key` of the initial state, checked against its final shape, in float64."""
    if key not in state:
        raise ValueError(f"initial has no parameter {key!r}: give the same architecture at init")
    t = state[key]
    if tuple(t.shape) != tuple(like.shape):
        raise ValueError(f"initial {key!r} has shape {tuple(t.shape)}, the model's has "
                         f"{tuple(like.shape)}")
    return t.detach().to(like.device).double()


def _layer_delta(model: nn.Module, initial) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer: W - W^0 as a matrix and theta - theta^0 (weight and bias) flat."""
    state, out = _state(initial), []
    for name, m in layers(model):
        prefix = f"{name}." if name else ""
        dw = _weight(m) - _initial(state, prefix + "weight", m.weight)
        parts = [dw.flatten()]
        if m.bias is not None:
            parts.append(m.bias.detach().double() - _initial(state, prefix + "bias", m.bias))
        out.append((dw.reshape(dw.shape[0], -1), torch.cat(parts)))
    return out


# --------------------------------------------------------------------------- Table 1

def generalisation_gap(model: nn.Module, train, test, *, loss: str = "ce") -> float:
    """GE of Table 1: the test loss minus the training loss, L_D(f) - L_S(f).

    Arguments:
        train, test: ``(x, y)`` pairs of images and labels.
        loss: "ce" (mean cross-entropy, as Table 2 measures it) or "error" (0-1 error).
    """
    check_choice(loss, ("ce", "error"), "loss")
    return _loss(model, test, loss, "test") - _loss(model, train, loss, "train")


def _loss(model: nn.Module, data, loss: str, name: str) -> float:
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TypeError(f"{name} must be an (x, y) pair of tensors")
    x = check_images(data[0], f"{name}[0]", ndim=None)
    check_model_input(model, x, f"{name}[0]")
    logits = predict(model, x).double()
    y = check_labels(data[1], x, logits.shape[1], f"{name}[1]")
    if loss == "error":
        return (logits.argmax(1) != y).double().mean().item()
    return F.cross_entropy(logits, y).item()


def frobenius_product(model: nn.Module) -> float:
    """PFN of Table 1: the product of the layers' Frobenius norms, prod_l ||W_l||_F."""
    return math.prod(torch.linalg.vector_norm(_matrix(m)).item() for _, m in layers(model))


def spectral_product(model: nn.Module) -> float:
    """PSN of Table 1: the product of the layers' spectral norms, prod_l ||W_l||_2."""
    return math.prod(torch.linalg.matrix_norm(_matrix(m), ord=2).item() for _, m in layers(model))


def parameter_count(model: nn.Module) -> int:
    """NoP of Table 1: the total number of parameters in the network."""
    check_model(model)
    return sum(p.numel() for p in model.parameters())


def spectral_sum(model: nn.Module, initial) -> float:
    """SoSP of Table 1: NoP * sum_l ||W_l^0 - W_l||_2, the spectral distance from init.

    Arguments:
        initial: the model at initialisation (module or state dict), same architecture.
    """
    return parameter_count(model) * sum(torch.linalg.matrix_norm(dw, ord=2).item()
                                        for dw, _ in _layer_delta(model, initial))


def layer_correlation(module: nn.Module) -> float:
    """rho(w_l) of Jin et al. (NeurIPS 2020, eq. 2): mean |cosine| between a layer's units.

    Linear: the rows w_i of W (n units), rho = 1 / (n (n - 1)) sum_{i != j} |cos(w_i, w_j)|.
    Conv: for each input channel c, the same mean over the filters' kernels w_{i,c}, then the
    mean over c. A layer with one unit has no pair: rho = 0. A zero vector has cosine 0.

    Arguments:
        module: a Linear or Conv layer.
    """
    if not isinstance(module, LAYERS):
        raise TypeError(f"module must be a Linear or Conv layer, got {type(module).__name__}")
    w = _weight(module)
    n = w.shape[0]
    if n < 2:
        return 0.0
    # (groups of vectors, n units, length): one group for Linear, one per input channel for Conv
    v = w[None] if w.dim() == 2 else w.flatten(2).transpose(0, 1)
    unit = v / torch.linalg.vector_norm(v, dim=-1, keepdim=True).clamp_min(torch.finfo(v.dtype).tiny)
    cos = (unit @ unit.transpose(1, 2)).abs()
    off = cos.sum((1, 2)) - cos.diagonal(dim1=1, dim2=2).sum(1)
    return (off / (n * (n - 1))).mean().item()


def weight_correlation(model: nn.Module) -> float:
    """WC of Table 1: the mean over layers of the weight correlation, (1 / L) sum_l rho(w_l)."""
    found = layers(model)
    return sum(layer_correlation(m) for _, m in found) / len(found)


def correlation_term(module: nn.Module) -> float:
    """g(w_l) of Jin et al. (NeurIPS 2020, Theorem 1): the PAC-Bayes KL term of a layer whose
    posterior correlates its n units by rho = rho(w_l), each of its m inputs (m = in_features,
    or in_channels for a convolution) a copy: -m [(n - 1) log(1 - rho) + log(1 + (n - 1) rho)],
    i.e. -m log det of the n x n matrix with unit diagonal and rho elsewhere (inf at rho = 1).

    Arguments:
        module: a Linear or Conv layer.
    """
    rho, n = layer_correlation(module), module.weight.shape[0]
    if rho >= 1.0:
        return math.inf
    return -module.weight.shape[1] * ((n - 1) * math.log1p(-rho) + math.log1p((n - 1) * rho))


def _sigmas(sigma, count: int) -> list[float]:
    """sigma_l per layer from one number or a sequence with one per layer."""
    values = list(sigma) if isinstance(sigma, Sequence) else [sigma] * count
    if len(values) != count:
        raise ValueError(f"sigma must be one number or one per layer ({count}), got {len(values)}")
    return [check_positive(s, "sigma") for s in values]


def pac_bayes(model: nn.Module, initial, *, sigma: float | Sequence[float] = 1.0) -> float:
    """PB of Table 1: sum_l ||theta_l^0 - theta_l||_F^2 / (2 sigma_l^2), the KL term of the
    PAC-Bayes bound with a Gaussian prior at init and posterior at the weights (McAllester 1999;
    Neyshabur et al. 2017), sigma_l = 1 as Jin et al. compute Table 2.

    Arguments:
        initial: the model at initialisation (module or state dict).
        sigma: the posterior's standard deviation, one for all layers or one per layer.
    """
    deltas = _layer_delta(model, initial)
    sigmas = _sigmas(sigma, len(deltas))
    return sum(d.square().sum().item() / (2 * s * s) for (_, d), s in zip(deltas, sigmas))


def pac_bayes_correlation(model: nn.Module, initial, *,
                          sigma: float | Sequence[float] = 1.0) -> float:
    """PBC of Table 1: sum_l (||theta_l^0 - theta_l||_F^2 / (2 sigma_l^2) + g(w_l)), the
    PAC-Bayes KL with correlated units of Jin et al. (NeurIPS 2020); g is `correlation_term`.

    Arguments:
        initial: the model at initialisation (module or state dict).
        sigma: as in `pac_bayes`.
    """
    return pac_bayes(model, initial, sigma=sigma) + sum(correlation_term(m) for _, m in layers(model))


def distance_from_init(model: nn.Module, initial) -> float:
    """||theta - theta^0||_2 over every parameter (Nagarajan and Kolter, 2019).

    Arguments:
        initial: the model at initialisation (module or state dict).
    """
    state = _state(initial)
    total = sum((p.detach().double() - _initial(state, k, p)).square().sum().item()
                for k, p in check_model(model).named_parameters())
    return math.sqrt(total)


def measures(model: nn.Module, initial=None, *, train=None, test=None,
             sigma: float | Sequence[float] = 1.0) -> dict[str, float]:
    """The tutorial's Table 1 for one network, keyed as there: PFN, PSN, NoP, WC; with
    `initial`, SoSP, PB, PBC and the distance from init; with `train` and `test`, GE.

    Arguments:
        initial: the model at initialisation (module or state dict), or None.
        train, test: ``(x, y)`` pairs, or None.
        sigma: as in `pac_bayes`.
    """
    out = {"PFN": frobenius_product(model), "PSN": spectral_product(model),
           "NoP": parameter_count(model), "WC": weight_correlation(model)}
    if initial is not None:
        out.update(SoSP=spectral_sum(model, initial), PB=pac_bayes(model, initial, sigma=sigma),
                   PBC=pac_bayes_correlation(model, initial, sigma=sigma),
                   distance=distance_from_init(model, initial))
    if (train is None) != (test is None):
        raise ValueError("give both train and test for GE, or neither")
    if train is not None:
        out["GE"] = generalisation_gap(model, train, test)
    return out

"""The tutorial's Table 2 at small scale: train a family of networks the same way, measure each
(Table 1 and the generalisation gap) and rank the measures by Kendall's tau against the gap."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .._checks import check_images, check_positive, check_seed
from .._model import correct
from ..tables import Tabular, markdown_table
from ..train import fit
from .complexity import measures
from .kendall import KendallTable, kendall_table

TABLE2 = ("PFN", "PSN", "NoP", "SoSP", "PB", "PBC", "WC")  # the measures of the tutorial's Table 2
MEASURED = (*TABLE2, "distance", "GE")  # what `measures` returns given the initial weights and data


@dataclass(frozen=True)
class Ranking(Tabular):
    """Each network's measures (``values[name]``: Table 1's measures, ``GE`` and ``test
    accuracy``) and the Kendall table of `keys` against GE (``kendall``, Table 2's layout).
    ``table()`` prints one row per network: the measures to 3 significant digits, GE and the
    test accuracy to 3 decimals."""

    values: dict[str, dict[str, float]]
    kendall: KendallTable
    keys: tuple[str, ...]

    @property
    def gap(self) -> list[float]:
        return [m["GE"] for m in self.values.values()]

    def table(self) -> str:
        return markdown_table(["network", *self.keys, "GE", "test accuracy"],
                              [[name, *(f"{m[k]:.3g}" for k in self.keys), f"{m['GE']:.3f}",
                                f"{m['test accuracy']:.3f}"] for name, m in self.values.items()])


def _pair(data, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TypeError(f"{name} must be an (x, y) pair of tensors")
    return check_images(data[0], f"{name}[0]", ndim=None), data[1]


def rank_networks(builders: Mapping[str, Callable[[], nn.Module]], train: Sequence, test: Sequence, *,
                  epochs: int, lr: float = 2e-3, batch_size: int = 32, seed: int = 0,
                  keys: Sequence[str] = TABLE2, sigma: float = 1.0) -> Ranking:
    """Table 2 of the tutorial (Jin et al., NeurIPS 2020, Table 2) on networks trained here.

    Each builder's network is initialised under torch.manual_seed(seed) (the caller's random
    state is restored afterwards), trained by `robustlab.train.fit` with Adam(lr) on `train`
    for `epochs` (batches of `batch_size`, shuffled with `seed`) on train's device, then
    measured by `stats.measures` (Table 1 against its initial weights, with `sigma`; GE =
    test loss - training loss, mean cross-entropy) with its test accuracy. Kendall's tau_b of
    each of `keys` against GE over the networks (`stats.kendall_table`) completes Table 2.

    Arguments:
        builders: network name -> a function returning a fresh, untrained network (at least 2).
        train, test: ``(x, y)`` pairs; the gap is measured on all of both.
        keys: the measures to rank, as `stats.measures` names them.
    """
    if not isinstance(builders, Mapping) or len(builders) < 2:
        raise ValueError("builders must map at least 2 network names to functions building them "
                         "(Kendall's tau needs a pair)")
    x_train, _ = _pair(train, "train")
    _pair(test, "test")
    check_positive(epochs, "epochs", integer=True)
    check_positive(lr, "lr")
    check_positive(batch_size, "batch_size", integer=True)
    check_seed(seed)
    keys = tuple(keys) if not isinstance(keys, str) else (keys,)
    unknown = [k for k in keys if k not in MEASURED]
    if not keys or unknown:
        raise ValueError(f"keys must name measures among {list(MEASURED)}, got {list(keys)}")
    values = {}
    for name, build in builders.items():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = build() if callable(build) else None
        if not isinstance(net, nn.Module):
            raise TypeError(f"builders[{name!r}] must return an nn.Module, got {type(net).__name__}")
        initial = copy.deepcopy(net.state_dict())
        fit(net, train, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, progress=False,
            device=x_train.device)
        values[str(name)] = measures(net.eval(), initial, train=train, test=test, sigma=sigma)
        values[str(name)]["test accuracy"] = correct(net, *test).double().mean().item()
    return Ranking(values, kendall_table({k: [m[k] for m in values.values()] for k in keys},
                                         [m["GE"] for m in values.values()]), keys)

"""Many attacks on the same examples, in one table."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from .._model import check_attack_inputs, correct, eval_mode, model_device, predict
from ..losses import is_fooled
from ..tables import Tabular, markdown_table
from .accuracy import Attack, check_adversarial, split_queries
from .ensemble import check_attacks, sync
from .stats import distortion_stats, query_stats


@dataclass
class Comparison(Tabular):
    """One row per attack: success rate, mean distortions, seconds, mean queries."""

    rows: list[dict]

    COLUMNS = (("attack", "attack"), ("success_rate", "success rate"), ("l0_mean", "mean L0"),
               ("l2_mean", "mean L2"), ("linf_mean", "mean Linf"), ("seconds", "seconds"),
               ("queries_mean", "mean queries"))

    def table(self) -> str:
        return markdown_table([title for _, title in self.COLUMNS],
                              [[row.get(key) for key, _ in self.COLUMNS] for row in self.rows])


def compare_attacks(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                    attacks: Mapping[str, Attack], *, targeted: bool = False) -> Comparison:
    """Run several attacks on the same examples and put the results in one table.

    The comparison of Carlini and Wagner (IEEE S&P 2017, Table IV) and of the tutorial's
    attack chapter: for each attack, the success rate over the examples the model classifies
    correctly (the only ones an untargeted attack can break), the mean L0, L2 and L-inf
    distortion of its successful examples (`distortion_stats`), wall-clock seconds and, for
    black-box attacks (which return ``(x_adv, queries)``), the mean queries of successful
    examples. The model runs in eval mode; every submodule's mode is restored afterwards.

    Arguments:
        attacks: dict of name -> ``attack(model, x, y)`` returning x_adv or, black-box, ``(x_adv,
            queries)``.
        targeted: `y` holds target classes; success means reaching them, over all examples.
    Returns a `Comparison` with ``.rows`` (dicts) and ``.table()``.
    """
    x, y, _, _ = check_attack_inputs(model, x, y)
    attacks = check_attacks(attacks)
    device = model_device(model) or x.device
    rows = []
    with eval_mode(model):
        keep = correct(model, x, y)  # also checks y against the number of classes
        if not targeted:  # a misclassified example is "broken" before any attack: leave it out
            if not keep.any():
                raise ValueError("the model misclassifies every example of x: nothing to attack")
            x, y = x[keep], y[keep]
        for name, attack in attacks.items():
            sync(device)
            start = time.perf_counter()
            out, queries = split_queries(attack(model, x, y))
            sync(device)
            seconds = time.perf_counter() - start
            out = check_adversarial(x, out, f"attacks[{name!r}]")
            success = is_fooled(predict(model, out).argmax(1), y, targeted)
            row = {"attack": name, **distortion_stats(x, out, success), "seconds": seconds}
            if queries is not None:
                row.update(query_stats(torch.as_tensor(queries).to(success.device), success))
            rows.append(row)
    return Comparison(rows)

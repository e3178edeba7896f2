"""Many attacks on the same examples, in one table."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from .._model import check_attack_inputs, correct, eval_mode, model_device, predict
from ..losses import is_fooled
from ..tables import Tabular, markdown_table, timing_table
from .accuracy import Attack, check_adversarial, split_queries
from .ensemble import check_attacks, sync
from .stats import distortion_stats, query_stats


@dataclass
class Comparison(Tabular):
    """One row per attack: success rate, mean distortions, mean queries; seconds in
    ``.timings()``."""

    rows: list[dict]

    COLUMNS = (("attack", "attack", None), ("success_rate", "success rate", 3),
               ("l0_mean", "mean L0", 1), ("l2_mean", "mean L2", 3), ("linf_mean", "mean Linf", 3),
               ("queries_mean", "mean queries", 0))

    def table(self) -> str:
        return markdown_table([title for _, title, _ in self.COLUMNS],
                              [[row.get(key) for key, _, _ in self.COLUMNS] for row in self.rows],
                              decimals=[places for _, _, places in self.COLUMNS])

    def timings(self) -> str:
        """Wall-clock seconds of each attack (machine-dependent, unlike ``table()``)."""
        return timing_table([r["attack"] for r in self.rows], [r["seconds"] for r in self.rows])


def compare_attacks(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                    attacks: Mapping[str, Attack], *, targeted: bool = False) -> Comparison:
    """Run several attacks on the same examples and put the results in one table.

    The comparison of Carlini and Wagner (IEEE S&P 2017, Table IV) and of the tutorial's
    attack chapter: for each attack, the success rate over the examples the model classifies
    correctly (the only ones an untargeted attack can break), the mean L0, L2 and L-inf
    distortion of its successful examples (`distortion_stats`), wall-clock seconds (in
    ``.timings()``) and, for
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

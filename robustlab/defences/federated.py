"""Federated adversarial training: FedAvg whose clients run `robustlab.train.fit` with any
objective (PGD-AT, TRADES, ...) on their own data, and a non-IID split of a data set.

McMahan et al., "Communication-efficient learning of deep networks from decentralized data"
(AISTATS 2017), Algorithm 1 (FederatedAveraging): each round a fraction C of the K clients
starts from the global weights w_t, trains E local epochs on its n_k examples, and the server
sets w_{t+1} = sum_k (n_k / n) w_{t+1}^k over the clients of the round (n their total).
Adversarial training at the clients follows Zizzo et al., "FAT: Federated adversarial training"
(NeurIPS 2020 SpicyFL workshop) and Shah et al., "Adversarial training in communication
constrained federated learning" (2021): the local objective is the adversarial loss, the
aggregation is FedAvg's.

Where it stands beside `robustlab.defences.distributed.ddp_fit`: ddp_fit is data-parallel
training of one model, every rank averaging gradients every batch over IID shards; here the
clients average weights once per round, after several local epochs on data that need not be
IID, and the rounds run one client after another in this process (a simulation). A real
deployment (Flower, FedML) sends the weights over a network to clients that keep their data;
its client's training step is what `fit` with the objective does here, its server's
aggregation what `_average` does.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from .._checks import check_generator, check_in_range, check_positive
from .._model import check_model, eval_mode, model_device
from .._random import draw_device
from ..tables import Tabular, markdown_table
from ..train import Objective, _restored_on_failure, cross_entropy, fit
from ..train import evaluate as accuracy

__all__ = ["FederatedHistory", "dirichlet_split", "federated_fit", "clean_and_robust"]

_SEEDS = 2 ** 31  # the range of each round's shuffling seed (fit's seed is an int)


def dirichlet_split(y: torch.Tensor, *, clients: int, alpha: float,
                    generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """Split the examples among `clients` with label skew: per class, shares from Dirichlet(alpha).

    Hsu, Qi and Brown, "Measuring the effects of non-identical data distribution for federated
    visual classification" (2019), section 3: for each class c, q_c ~ Dir(alpha * 1_K) gives the
    fraction of c's examples that each of the K clients receives. Small alpha gives each client
    few classes; alpha -> inf gives every client the class proportions of the whole set (IID).

    Args:
        y: the labels (N,), integers.
        clients: the number of clients K.
        alpha: the Dirichlet concentration, > 0 (math.inf for an IID split).
        generator: the random source of the shares and the shuffling within each class.
    Returns K index tensors (long, on y's device) that together hold every index exactly once;
    a client may receive none when alpha is small.
    """
    if not isinstance(y, torch.Tensor) or y.dim() != 1 or y.is_floating_point():
        raise TypeError("y must be a 1-d tensor of integer labels")
    check_positive(clients, "clients", integer=True)
    if alpha != math.inf:  # inf is the IID limit; every finite alpha must be > 0
        check_positive(alpha, "alpha")
    check_generator(generator)
    where = draw_device(generator, y.device)
    labels = y.to(where)
    parts: list[list[torch.Tensor]] = [[] for _ in range(clients)]
    for c in torch.unique(labels).tolist():  # one host read: the classes present
        members = torch.nonzero(labels == c).flatten()
        members = members[torch.randperm(len(members), generator=generator, device=where)]
        if alpha == math.inf:
            shares = torch.full((clients,), 1.0 / clients, device=where)
        else:
            # a Dirichlet draw as normalised Gamma(alpha) draws: torch.distributions takes no
            # generator, torch._standard_gamma does not either, so the gammas come from
            # Marsaglia-Tsang via `_gamma`
            gammas = _gamma(alpha, clients, generator, where)
            shares = gammas / gammas.sum()
        # cumulative cut points, rounded, so the pieces partition the class exactly
        cuts = torch.round(torch.cumsum(shares, 0) * len(members)).long().clamp(max=len(members))
        cuts[-1] = len(members)
        start = torch.cat([cuts.new_zeros(1), cuts[:-1]])
        for k, (a, b) in enumerate(zip(start.tolist(), cuts.tolist())):
            parts[k].append(members[a:b])
    return [torch.cat(p).sort().values.to(y.device) if p else
            torch.empty(0, dtype=torch.long, device=y.device) for p in parts]


def _gamma(alpha: float, n: int, generator: torch.Generator | None,
           device: torch.device) -> torch.Tensor:
    """`n` draws of Gamma(alpha, 1) from `generator`: Marsaglia and Tsang (2000).

    Marsaglia and Tsang, "A simple method for generating gamma variables" (ACM TOMS 2000): for
    a >= 1, with d = a - 1/3, c = 1 / sqrt(9 d), v = (1 + c z)^3, accept d v when
    log u < z^2 / 2 + d - d v + d log v. For a < 1, Gamma(a) = Gamma(a + 1) * u^(1 / a). A
    fixed batch of 64 proposals per draw accepts at least one with probability above
    1 - 0.05^64 (the acceptance rate exceeds 0.95 for every a >= 1).
    """
    a = alpha + 1.0 if alpha < 1 else alpha
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    z = torch.randn(n, 64, generator=generator, device=device, dtype=torch.float64)
    u = torch.rand(n, 64, generator=generator, device=device, dtype=torch.float64)
    v = (1 + c * z) ** 3
    ok = (v > 0) & (torch.log(u) < z ** 2 / 2 + d - d * v + d * torch.log(v.clamp(min=1e-300)))
    first = torch.argmax(ok.int(), dim=1)  # the first accepted proposal of each row
    g = d * v.gather(1, first[:, None]).squeeze(1)
    if alpha < 1:
        boost = torch.rand(n, generator=generator, device=device, dtype=torch.float64)
        g = g * boost ** (1.0 / alpha)
    return g.clamp(min=1e-300)  # every client keeps a share > 0, however tiny


@dataclasses.dataclass
class FederatedHistory(Tabular):
    """One row per round: ``round``, ``clients`` (how many trained), ``loss`` (their
    size-weighted mean loss in the last local epoch) and what `evaluate` returned."""

    rows: list[dict]

    def table(self) -> str:
        headers = list(dict.fromkeys(k for row in self.rows for k in row))
        return markdown_table(headers, [[row.get(h) for h in headers] for row in self.rows],
                              digits=4)

    def column(self, name: str) -> list:
        """The value of `name` in every round."""
        return [row.get(name) for row in self.rows]


def _average(states: Sequence[dict], weights: Sequence[float]) -> dict:
    """FedAvg's server step: sum_k p_k w^k for each floating entry of the state dicts.

    Integer entries (batch norm's num_batches_tracked) are counters, not weights to average:
    the first client's is kept. With one client p = 1.0 and the sum is its weights exactly.
    """
    out = {}
    for name, first in states[0].items():
        if not first.is_floating_point():
            out[name] = first.clone()
            continue
        total = torch.zeros_like(first)
        for state, p in zip(states, weights):
            total = total + p * state[name]
        out[name] = total
    return out


def _check_clients(clients) -> list[tuple[torch.Tensor, torch.Tensor]]:
    if not isinstance(clients, Sequence) or not clients:
        raise ValueError("clients must be a non-empty list of (x, y) pairs of tensors")
    for k, pair in enumerate(clients):
        if (not isinstance(pair, (tuple, list)) or len(pair) != 2
                or not all(isinstance(t, torch.Tensor) for t in pair)):
            raise TypeError(f"clients[{k}] must be an (x, y) pair of tensors")
        if len(pair[0]) != len(pair[1]):
            raise ValueError(f"clients[{k}]: x and y must be of the same length, got "
                             f"{len(pair[0])} and {len(pair[1])}")
    if not any(len(x) for x, _ in clients):
        raise ValueError("clients: every client is empty; there is nothing to train on")
    return list(clients)


def federated_fit(model: nn.Module, clients: Sequence[tuple[torch.Tensor, torch.Tensor]], *,
                  rounds: int, local_epochs: int, objective: Objective | None = None,
                  lr: float = 1e-3, batch_size: int = 64, fraction: float = 1.0,
                  generator: torch.Generator | None = None,
                  evaluate: Callable[[nn.Module], dict] | None = None) -> FederatedHistory:
    """FedAvg with local (adversarial) training: `rounds` rounds of `local_epochs` of `fit`.

    McMahan et al. 2017, Algorithm 1, with each client's update ``fit(copy of w_t, (x_k, y_k),
    epochs=local_epochs, objective=objective, lr=lr, batch_size=batch_size, seed=s_t)`` (a
    fresh Adam each round, as a stateless client would have) and the server's step
    w_{t+1} = sum_k (n_k / n) w^k; Zizzo et al. 2020 / Shah et al. 2021 with e.g.
    ``objective=defences.pgd_at(...)``.

    Randomness: at the start of each round one draw ``torch.randint(2**31, (1,),
    generator=generator)`` gives s_t, the shuffling seed of every client of that round; then,
    when ``fraction < 1``, ``torch.randperm(K, generator=generator)`` picks the round's
    max(1, round(fraction K)) clients (its first ones, trained in index order). Same generator
    state, same result. The objective's own randomness (PGD's random start) is the objective's
    generator's. So one client and one round equal ``fit`` on its data with ``seed=s_0``.

    Args:
        model: trained in place, as `fit` does, on its own device; an exception leaves it as
            it was passed in.
        clients: one ``(x, y)`` pair of tensors per client; an empty one takes no part.
        rounds, local_epochs: communication rounds T and local epochs E.
        objective: the clients' `train.Objective`; cross-entropy if None.
        lr, batch_size: each client's Adam learning rate and batch size (B).
        fraction: C, the fraction of clients that train each round, in (0, 1].
        generator: the shuffling seeds and client sampling; None takes a fresh CPU generator
            with torch's default seed (the same run every time).
        evaluate: ``evaluate(model) -> dict`` of numbers, called with the global model after
            each round (e.g. `clean_and_robust` for clean and robust accuracy).
    Returns a `FederatedHistory`, one row per round.
    """
    check_model(model)
    clients = _check_clients(clients)
    check_positive(rounds, "rounds", integer=True)
    check_positive(local_epochs, "local_epochs", integer=True)
    check_in_range(fraction, "fraction", 0.0, 1.0, low_open=True)
    check_generator(generator)
    if evaluate is not None and not callable(evaluate):
        raise TypeError(f"evaluate must be callable, got {type(evaluate).__name__}")
    generator = generator if generator is not None else torch.Generator()
    per_round = max(1, round(fraction * len(clients)))
    device = model_device(model) or torch.device("cpu")
    history = []
    with _restored_on_failure(model, None, None):
        for t in range(rounds):
            seed = int(torch.randint(_SEEDS, (1,), generator=generator, device=generator.device))
            chosen = range(len(clients))
            if per_round < len(clients):
                pick = torch.randperm(len(clients), generator=generator, device=generator.device)
                chosen = sorted(pick[:per_round].tolist())
            # a client without data (dirichlet_split gives some at small alpha) has n_k = 0:
            # no weight in the average, so it does not train; a round of only such clients
            # leaves the global model as it was
            chosen = [k for k in chosen if len(clients[k][0])]
            n = sum(len(clients[k][0]) for k in chosen)
            states, weights, loss = [], [], 0.0
            for k in chosen:
                local = copy.deepcopy(model)
                log = fit(local, clients[k], epochs=local_epochs,
                          objective=objective or cross_entropy, lr=lr, batch_size=batch_size,
                          device=device, seed=seed, progress=False)
                states.append(local.state_dict())
                weights.append(len(clients[k][0]) / n)
                loss += weights[-1] * log[-1]["loss"]
            if states:
                model.load_state_dict(_average(states, weights))
            row = {"round": t + 1, "clients": len(chosen), "loss": loss if states else math.nan}
            if evaluate is not None:
                row.update(evaluate(model))
            history.append(row)
        model.eval()
    return FederatedHistory(history)


def clean_and_robust(x: torch.Tensor, y: torch.Tensor, *, attack: Callable | None = None
                  ) -> Callable[[nn.Module], dict]:
    """An `evaluate` callback for `federated_fit`: clean accuracy on ``(x, y)`` and, with
    ``attack(model, x, y) -> x_adv``, the accuracy on the attacked inputs (robust accuracy,
    Madry et al. 2018), both in eval mode."""
    if attack is not None and not callable(attack):
        raise TypeError(f"attack must be callable, got {type(attack).__name__}")

    def measure(model: nn.Module) -> dict:
        row = {"clean_acc": accuracy(model, (x, y))}
        if attack is not None:
            with eval_mode(model):
                x_adv = attack(model, x, y)
            row["robust_acc"] = accuracy(model, (x_adv, y))
        return row
    return measure

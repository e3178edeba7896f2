"""A two-layer graph convolutional network for node classification, in plain torch, and its
seeded training on a (clean or poisoned) graph of `robustlab.graph_data`.

Kipf and Welling (ICLR 2017), eq. 9: ``Z = Â ReLU(Â X W1) W2`` with the renormalised adjacency
``Â = D^-1/2 (A + I) D^-1/2``, D the degrees of ``A + I``. The model computes Â itself from the
dense adjacency it is given, differentiably, so an attack can take gradients with respect to the
adjacency (`robustlab.attacks.pgd_topology`). The layers have no bias: the linearised model of
Nettack, ``Â² X W1 W2``, is then exactly the network with its ReLU removed.

`poison_eval` sets evasion (a perturbed graph at test time) beside poisoning (a GCN retrained
on the perturbed graph); `robustlab.attacks` re-exports it beside the attacks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_generator, check_in_range, check_positive, check_seed
from ._model import check_model, eval_mode
from ._random import draw_device
from .graph_data import Graph, check_adjacency, check_graph, check_graph_features, check_nodes
from .tables import Tabular, markdown_table

__all__ = ["GCN", "PoisonResult", "gcn_accuracy", "normalize_adjacency", "poison_eval", "train_gcn"]


def normalize_adjacency(adjacency: torch.Tensor) -> torch.Tensor:
    """``Â = D^-1/2 (A + I) D^-1/2`` (Kipf and Welling 2017, eq. 8), differentiable in A.

    Every degree of ``A + I`` is at least 1, so no division by zero, even for isolated nodes.
    """
    a = adjacency + torch.eye(len(adjacency), dtype=adjacency.dtype, device=adjacency.device)
    scale = a.sum(1).rsqrt()
    return scale[:, None] * a * scale[None, :]


class GCN(nn.Module):
    """Two graph convolutions without bias: ``Z = Â ReLU(Â X W1) W2`` (Kipf and Welling 2017).

    ``forward(features, adjacency)`` takes the node features (N, F) and the 0/1 adjacency
    (N, N) and returns logits (N, K) for every node.
    """

    def __init__(self, in_features: int, num_classes: int, hidden: int = 16):
        super().__init__()
        for name, v in (("in_features", in_features), ("num_classes", num_classes),
                        ("hidden", hidden)):
            check_positive(v, name, integer=True)
        self.layer1 = nn.Linear(in_features, hidden, bias=False)
        self.layer2 = nn.Linear(hidden, num_classes, bias=False)
        self.activation = nn.ReLU()

    def propagate(self, features: torch.Tensor, a_hat: torch.Tensor,
                  drop: Callable[[torch.Tensor], torch.Tensor] = lambda t: t) -> torch.Tensor:
        """Logits from the normalised adjacency `a_hat`; `drop` is training's dropout."""
        h = self.activation(a_hat @ self.layer1(drop(features)))
        return a_hat @ self.layer2(drop(h))

    def forward(self, features: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
        if features.dim() != 2 or features.shape[1] != self.layer1.in_features:
            raise ValueError(f"features must have shape (N, {self.layer1.in_features}), got "
                             f"{tuple(features.shape)}")
        if adjacency.shape != (len(features), len(features)):
            raise ValueError(f"adjacency must have shape ({len(features)}, {len(features)}) to "
                             f"match features, got {tuple(adjacency.shape)}")
        return self.propagate(features, normalize_adjacency(adjacency))


def _dropout(p: float, generator: torch.Generator) -> Callable[[torch.Tensor], torch.Tensor]:
    """Inverted dropout whose masks come from `generator` (drawn on its device, moved to the
    data's), so training gives the same weights on every device."""
    def drop(t: torch.Tensor) -> torch.Tensor:
        keep = torch.rand(t.shape, generator=generator, device=draw_device(generator, t.device))
        return t * (keep >= p).to(t.device, t.dtype) / (1 - p)
    return drop


def train_gcn(graph: Graph, *, seed: int = 0, epochs: int = 200, hidden: int = 16,
              lr: float = 0.01, weight_decay: float = 5e-4, dropout: float = 0.5,
              adjacency: torch.Tensor | None = None, features: torch.Tensor | None = None,
              generator: torch.Generator | None = None) -> GCN:
    """Train a GCN on the training nodes of `graph`, full batch; return it in eval mode.

    Kipf and Welling (2017), section 5.2: Adam, lr 0.01, weight decay 5e-4, dropout 0.5,
    16 hidden units; a fixed number of epochs (no early stopping, so no validation peeking).
    About a second on a CPU for the default `sbm_graph`.

    Arguments:
        graph: the labels and the split; its adjacency and features unless given.
        seed: fixes the initial weights (drawn under a forked global RNG, so the caller's
            stream is untouched) and, without `generator`, the dropout masks.
        adjacency, features: train on these instead (a poisoned graph).
        generator: the source of the dropout masks (a CPU one by default, seeded by `seed`).
    """
    check_graph(graph)
    check_seed(seed)
    check_positive(epochs, "epochs", integer=True)
    check_positive(lr, "lr")
    check_in_range(weight_decay, "weight_decay", 0, float("inf"))
    check_in_range(dropout, "dropout", 0, 1, high_open=True)
    generator = check_generator(generator) or torch.Generator().manual_seed(seed)
    adjacency = check_adjacency(graph.adjacency if adjacency is None else adjacency)
    features = check_graph_features(graph.features if features is None else features,
                                    len(adjacency))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GCN(features.shape[1], graph.num_classes, hidden)
    model.to(adjacency.device, adjacency.dtype)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    a_hat, drop = normalize_adjacency(adjacency.detach()), _dropout(dropout, generator)
    features, train, y = features.detach(), graph.train, graph.labels[graph.train]
    model.train()
    with torch.enable_grad():
        for _ in range(epochs):
            optimiser.zero_grad()
            F.cross_entropy(model.propagate(features, a_hat, drop)[train], y).backward()
            optimiser.step()
    return model.eval()


@torch.no_grad()
def gcn_accuracy(model: nn.Module, graph: Graph, nodes: torch.Tensor | None = None, *,
                 adjacency: torch.Tensor | None = None,
                 features: torch.Tensor | None = None) -> float:
    """Share of `nodes` (the test nodes by default) that `model` classifies right, on `graph`
    or on the given (perturbed) adjacency and features, in eval mode."""
    check_graph(graph)
    nodes = graph.test if nodes is None else check_nodes(nodes, graph.n_nodes)
    adjacency = check_adjacency(graph.adjacency if adjacency is None else adjacency)
    features = check_graph_features(graph.features if features is None else features,
                                    len(adjacency))
    with eval_mode(model):
        logits = model(features, adjacency)
    return (logits[nodes].argmax(1) == graph.labels[nodes]).float().mean().item()


@dataclass(frozen=True)
class PoisonResult(Tabular):
    """Evasion against poisoning on the same perturbed graph: accuracy of the clean-trained
    model on the clean graph and on the perturbed one, and of a model retrained on the
    perturbed graph (`poisoned_model`), tested on it."""

    clean_accuracy: float
    evasion_accuracy: float
    poisoning_accuracy: float
    poisoned_model: nn.Module

    def table(self) -> str:
        rows = [("clean", self.clean_accuracy), ("evasion (attacked at test time)",
                                                 self.evasion_accuracy),
                ("poisoning (retrained on the attacked graph)", self.poisoning_accuracy)]
        return markdown_table(["setting", "accuracy"], rows, decimals=[None, 3])


def poison_eval(model: nn.Module, graph: Graph, *, adjacency: torch.Tensor | None = None,
                features: torch.Tensor | None = None, nodes: torch.Tensor | None = None,
                seed: int = 0, epochs: int = 200) -> PoisonResult:
    """Evasion versus poisoning (Zügner et al. 2018, section 6.2): the same perturbed graph
    seen only at test time by the clean-trained `model`, or also at training time by a GCN
    retrained on it with `robustlab.graph_models.train_gcn` (`seed`, `epochs`).

    Arguments:
        model: the GCN trained on the clean graph.
        graph: the clean graph (labels, split).
        adjacency, features: the perturbed graph (the clean one's where None).
        nodes: where accuracy is measured (the test nodes by default).
    """
    check_model(model)
    check_graph(graph)
    check_seed(seed)
    adjacency = check_adjacency(graph.adjacency if adjacency is None else adjacency)
    if adjacency.shape != graph.adjacency.shape:
        raise ValueError(f"adjacency must have shape {tuple(graph.adjacency.shape)} like the "
                         f"graph's, got {tuple(adjacency.shape)}")
    features = check_graph_features(graph.features if features is None else features,
                                    len(adjacency))
    nodes = graph.test if nodes is None else check_nodes(nodes, graph.n_nodes)
    poisoned = train_gcn(graph, seed=seed, epochs=epochs, adjacency=adjacency, features=features,
                         hidden=model.layer1.out_features if isinstance(model, GCN) else 16)
    attacked = dict(adjacency=adjacency, features=features)
    return PoisonResult(gcn_accuracy(model, graph, nodes),
                        gcn_accuracy(model, graph, nodes, **attacked),
                        gcn_accuracy(poisoned, graph, nodes, **attacked), poisoned)

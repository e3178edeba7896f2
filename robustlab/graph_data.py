"""A graph the project makes itself: a stochastic block model with bag-of-words node features,
the data of the graph attacks (`robustlab.attacks.graph`), offline and seeded.

Nodes fall into blocks (the classes); an edge joins two nodes of the same block with probability
`p_in` and of different blocks with `p_out` (Holland, Laskey and Leinhardt, Social Networks
1983). Each node's features are binary word indicators, as in Cora: every class owns an equal
share of the vocabulary, a node turns each of its class's words on with probability
`word_rate` and every other word with probability ``feature_noise * word_rate``, so features
alone predict the class only in part and the graph's structure carries the rest.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from ._checks import check_in_range, check_positive, check_seed

__all__ = ["D_MIN", "Graph", "check_adjacency", "check_graph", "check_graph_features", "degree_statistic",
           "powerlaw_log_likelihood", "powerlaw_terms", "sbm_graph"]


def check_adjacency(adjacency, name: str = "adjacency") -> torch.Tensor:
    """An undirected simple graph: a float (N, N) tensor, 0/1, symmetric, zero diagonal."""
    if not isinstance(adjacency, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(adjacency).__name__}")
    if adjacency.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{name} must be float32 or float64 (the GCN takes gradients with "
                        f"respect to it), got dtype {adjacency.dtype}")
    if adjacency.dim() != 2 or adjacency.shape[0] != adjacency.shape[1] or not len(adjacency):
        raise ValueError(f"{name} must be a non-empty square matrix (N, N), got "
                         f"{tuple(adjacency.shape)}")
    a = adjacency.detach()
    # three facts in one read back to the host
    binary, symmetric, loopless = torch.stack([((a == 0) | (a == 1)).all(), (a == a.T).all(),
                                               (a.diagonal() == 0).all()]).tolist()
    if not binary:
        raise ValueError(f"{name} must hold only 0 and 1 (an unweighted graph)")
    if not symmetric:
        raise ValueError(f"{name} must be symmetric (an undirected graph): {name} != {name}.T")
    if not loopless:
        raise ValueError(f"{name} must have a zero diagonal (no self loops; the GCN adds them)")
    return adjacency


def check_graph_features(features, n_nodes: int, name: str = "features") -> torch.Tensor:
    """Node features: a float (N, F) tensor with one row per node and no NaN."""
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(features).__name__}")
    if features.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{name} must be float32 or float64, got dtype {features.dtype}")
    if features.dim() != 2 or features.shape[0] != n_nodes or not features.shape[1]:
        raise ValueError(f"{name} must have shape (N, F) = ({n_nodes}, F) with F >= 1, got "
                         f"{tuple(features.shape)}")
    if features.isnan().any():
        raise ValueError(f"{name} contains NaN")
    return features


@dataclass(frozen=True)
class Graph:
    """A node-classification graph: adjacency (N, N), features (N, F), labels (N,) and the
    index tensors of a train / validation / test split, all on one device."""

    adjacency: torch.Tensor
    features: torch.Tensor
    labels: torch.Tensor
    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor

    def __post_init__(self):
        n = len(check_adjacency(self.adjacency))
        check_graph_features(self.features, n)
        if self.features.dtype != self.adjacency.dtype:
            raise TypeError(f"features has dtype {self.features.dtype} but adjacency has "
                            f"{self.adjacency.dtype}")
        for name in ("features", "labels", "train", "val", "test"):
            t = getattr(self, name)
            if not isinstance(t, torch.Tensor) or t.device != self.adjacency.device:
                raise ValueError(f"{name} must be a tensor on the adjacency's device "
                                 f"{self.adjacency.device}")
        if self.labels.dtype != torch.int64 or self.labels.shape != (n,):
            raise ValueError(f"labels must be int64 of shape ({n},), got {self.labels.dtype} "
                             f"{tuple(self.labels.shape)}")
        for name in ("train", "val", "test"):
            check_nodes(getattr(self, name), n, name)

    @property
    def n_nodes(self) -> int:
        return len(self.adjacency)

    @property
    def num_classes(self) -> int:
        return int(self.labels.max()) + 1

    def to(self, device: str | torch.device) -> Graph:
        """The same graph with every tensor on `device`."""
        return Graph(**{f.name: getattr(self, f.name).to(device) for f in dataclasses.fields(self)})

    def replace(self, *, adjacency: torch.Tensor | None = None,
                features: torch.Tensor | None = None) -> Graph:
        """The same nodes, labels and split with another (e.g. perturbed) adjacency or features."""
        return dataclasses.replace(self, adjacency=self.adjacency if adjacency is None else adjacency,
                                   features=self.features if features is None else features)


def check_nodes(nodes, n_nodes: int, name: str = "nodes") -> torch.Tensor:
    """A 1-D int64 tensor of distinct-or-not node indices in [0, n_nodes), not empty."""
    if not isinstance(nodes, torch.Tensor) or nodes.dtype != torch.int64 or nodes.dim() != 1:
        raise TypeError(f"{name} must be a 1-D int64 tensor of node indices")
    if not len(nodes):
        raise ValueError(f"{name} is empty")
    lo, hi = torch.stack(torch.aminmax(nodes)).tolist()
    if lo < 0 or hi >= n_nodes:
        raise ValueError(f"{name} holds node indices outside [0, {n_nodes}): range [{lo}, {hi}]")
    return nodes


def check_graph(graph) -> Graph:
    """`graph` must be a `Graph` (its constructor checked the rest)."""
    if not isinstance(graph, Graph):
        raise TypeError(f"graph must be a robustlab.graph_data.Graph, got {type(graph).__name__}")
    return graph


D_MIN = 2  # degrees below it are left out of the power-law fit (Zügner et al. 2018, section 4.1)


def powerlaw_terms(degree: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each degree's share of a power-law fit: (1, log d) where d >= D_MIN, else (0, 0), in
    float64 (a likelihood-ratio test compares log-likelihoods of hundreds to 0.004)."""
    d = degree.double()
    kept = d >= D_MIN
    return kept.double(), torch.where(kept, d.clamp(min=1).log(), 0)


def powerlaw_log_likelihood(n: torch.Tensor, log_sum: torch.Tensor) -> torch.Tensor:
    """Log-likelihood of n degrees >= D_MIN whose logs sum to `log_sum`, under a power law at
    the approximate MLE ``α = 1 + n / (Σ log d - n log(D_MIN - 1/2))`` (Zügner, Akbarnejad and
    Günnemann, KDD 2018, eqs. 7-8): ``n log α + n α log D_MIN - (α + 1) Σ log d``."""
    alpha = 1 + n / (log_sum - n * math.log(D_MIN - 0.5))
    return n * alpha.log() + n * alpha * math.log(D_MIN) - (alpha + 1) * log_sum


def degree_statistic(clean: torch.Tensor, perturbed: torch.Tensor) -> float:
    """Nettack's likelihood-ratio statistic ``Λ = 2 (l(D) + l(D')) - 2 l(D ∪ D')`` of two
    adjacencies' degree sequences (Zügner et al. 2018, eqs. 9-10): below 0.004 (χ²(1) at 95 %),
    one power law explains both, so the perturbation is unnoticeable by degrees."""
    (n0, s0), (n1, s1) = ((t.sum() for t in powerlaw_terms(check_adjacency(a, name).sum(1)))
                          for a, name in ((clean, "clean"), (perturbed, "perturbed")))
    return (2 * (powerlaw_log_likelihood(n0, s0) + powerlaw_log_likelihood(n1, s1)
                 - powerlaw_log_likelihood(n0 + n1, s0 + s1))).item()


def sbm_graph(*, n_nodes: int = 300, n_blocks: int = 3, p_in: float = 0.05, p_out: float = 0.01,
              feature_dim: int = 60, word_rate: float = 0.15, feature_noise: float = 0.5,
              train_fraction: float = 0.2, val_fraction: float = 0.2, seed: int = 0) -> Graph:
    """A stochastic block model with binary bag-of-words features and a seeded split.

    Holland et al. (1983): ``P(A_ij = 1) = p_in`` when nodes i and j share a block, ``p_out``
    otherwise; blocks are the labels, of sizes as equal as `n_nodes` allows.

    Arguments:
        n_nodes, n_blocks: nodes and classes.
        p_in, p_out: edge probabilities within and between blocks.
        feature_dim: vocabulary size; each class owns ``feature_dim // n_blocks`` words.
        word_rate: probability that a node uses a word of its own class.
        feature_noise: in [0, 1]; other words appear with probability ``feature_noise *
            word_rate`` (1: features carry no class signal).
        train_fraction, val_fraction: shares of the nodes in the training and validation
            sets; the rest is the test set.
        seed: fixes the graph, the features and the split.
    """
    check_positive(n_nodes, "n_nodes", integer=True)
    check_in_range(n_blocks, "n_blocks", 2, n_nodes, integer=True)
    for name, p in (("p_in", p_in), ("p_out", p_out), ("word_rate", word_rate),
                    ("feature_noise", feature_noise)):
        check_in_range(p, name, 0, 1)
    check_in_range(feature_dim, "feature_dim", n_blocks, 1 << 20, integer=True)
    check_in_range(train_fraction, "train_fraction", 0, 1, low_open=True, high_open=True)
    check_in_range(val_fraction, "val_fraction", 0, 1 - train_fraction, high_open=True)
    check_seed(seed)
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n_nodes) * n_blocks // n_nodes
    same = labels[:, None] == labels[None, :]
    above = torch.ones(n_nodes, n_nodes, dtype=torch.bool).triu(1)  # each pair once, no loops
    upper = (torch.rand(n_nodes, n_nodes, generator=g) < torch.where(same, p_in, p_out)) & above
    adjacency = (upper | upper.T).float()
    owner = torch.arange(feature_dim) * n_blocks // feature_dim  # the class owning each word
    rate = torch.where(labels[:, None] == owner[None, :], word_rate, feature_noise * word_rate)
    features = (torch.rand(n_nodes, feature_dim, generator=g) < rate).float()
    order = torch.randperm(n_nodes, generator=g)
    n_train, n_val = max(1, round(train_fraction * n_nodes)), round(val_fraction * n_nodes)
    if n_train + n_val >= n_nodes:
        raise ValueError(f"train_fraction and val_fraction leave no test node of {n_nodes}")
    return Graph(adjacency, features, labels, order[:n_train].sort().values,
                 order[n_train:n_train + n_val].sort().values,
                 order[n_train + n_val:].sort().values)

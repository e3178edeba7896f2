"""Point-cloud classifiers for the shapes of `robustlab.pointcloud_data`, and their seeded
training: PointNet (a shared per-point MLP and a max-pool) and a small DGCNN (EdgeConv on a
k-nearest-neighbour graph rebuilt in feature space at every layer).

Both map points (N, P, 3) to logits (N, K), for any number of points P (DGCNN needs P > k), and
are invariant to the order of the points. Neither has batch norm, so eval and train mode compute
the same function. `train_point_model` retrains one from its seed in seconds, with the same
weights each time; the zoo stores each, trained with seed 0, beside its recipe
(`robustlab.zoo_beyond`).
"""

from __future__ import annotations

import torch
from torch import nn

from ._checks import check_choice, check_positive, check_seed
from ._model import correct, model_device
from .pointcloud_data import CLASSES, check_points, shapes
from .train import fit

__all__ = ["DGCNN", "PointNet", "point_accuracy", "train_point_model"]


def _mlp(widths: tuple[int, ...]) -> nn.Sequential:
    """Linear + ReLU layers applied to the last dimension: a per-point (shared) MLP."""
    layers = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers)


class PointNet(nn.Module):
    """PointNet (Qi, Su, Mo and Guibas, CVPR 2017), vanilla: the same MLP h on every point, a
    max over points (a symmetric function, so the order of points does not matter), then a
    classifier:  f(x_1..x_P) = g(max_i h(x_i)).

    Without the T-nets (the learnt input and feature alignments): the paper reports they add
    about 2 points of accuracy on ModelNet40; here the clouds differ by a turn about the
    vertical axis, which the data show often enough for the MLP to learn.
    """

    def __init__(self, num_classes: int = len(CLASSES), widths: tuple[int, ...] = (64, 128, 256)):
        super().__init__()
        check_positive(num_classes, "num_classes", integer=True)
        self.point_mlp = _mlp((3, *widths))
        self.head = nn.Sequential(nn.Linear(widths[-1], 128), nn.ReLU(), nn.Linear(128, num_classes))

    def features(self, points: torch.Tensor) -> torch.Tensor:
        """Per-point features h(x_i) (N, P, C) before the max-pool: a point whose feature
        attains the max in some channel is a critical point (`attacks.pointcloud.critical_points`)."""
        return self.point_mlp(check_points(points, finite=False))  # an attack's loop: no sync

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(points).amax(1))


def knn(h: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (N, P, k) of each point's k nearest other points in feature space h (N, P, C)."""
    d = torch.cdist(h, h)
    d = d + torch.eye(h.shape[1], device=h.device, dtype=h.dtype) * torch.finfo(h.dtype).max
    return d.topk(k, dim=2, largest=False).indices  # the point itself excluded by the diagonal


class EdgeConv(nn.Module):
    """EdgeConv (Wang et al., ACM TOG 2019, eq. 7-8) with one linear layer Theta:
    h'_i = max_{j in kNN(i)} ReLU(Theta [h_i, h_j - h_i] + b).

    Computed without the (N, P, k, 2C) edge tensor: with Theta = [T1, T2],
    Theta [h_i, h_j - h_i] = (T1 - T2) h_i + T2 h_j, and since ReLU is increasing the max over
    j moves inside it: h'_i = ReLU((T1 - T2) h_i + b + max_j T2 h_j). The same function and
    gradient (the max's gradient goes to the winning neighbour), several times faster on a CPU.
    """

    def __init__(self, c_in: int, c_out: int, k: int):
        super().__init__()
        self.k = k
        self.theta = nn.Linear(2 * c_in, c_out)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        n, p, c = h.shape
        t1, t2 = self.theta.weight.split(c, dim=1)
        own, other = h @ (t1 - t2).T + self.theta.bias, h @ t2.T  # (N, P, C_out) each
        idx = knn(h.detach(), self.k)  # the graph is a choice, not differentiated through
        flat = idx.reshape(n, p * self.k, 1).expand(-1, -1, other.shape[2])
        best = other.gather(1, flat).view(n, p, self.k, -1).max(2).values
        return torch.relu(own + best)


class DGCNN(nn.Module):
    """A small DGCNN (Wang, Sun, Liu, Sarma, Bronstein and Solomon, "Dynamic graph CNN for
    learning on point clouds", ACM TOG 2019): three EdgeConv layers, each on the kNN graph of
    the previous layer's features (the dynamic graph; the first on the coordinates), their
    outputs concatenated, a per-point linear layer, a max over points and a classifier.
    """

    def __init__(self, num_classes: int = len(CLASSES), k: int = 10,
                 widths: tuple[int, ...] = (32, 32, 64)):
        super().__init__()
        check_positive(num_classes, "num_classes", integer=True)
        self.k = check_positive(k, "k", integer=True)
        ins = (3, *widths[:-1])
        self.convs = nn.ModuleList(EdgeConv(a, b, k) for a, b in zip(ins, widths))
        self.merge = _mlp((sum(widths), 128))
        self.head = nn.Sequential(nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, num_classes))

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        check_points(points, finite=False)  # shape and dtype only: no read back to the host
        if points.shape[1] <= self.k:
            raise ValueError(f"points: DGCNN with k={self.k} needs more than {self.k} points per "
                             f"cloud, got {points.shape[1]}")
        h, outs = points, []
        for conv in self.convs:
            h = conv(h)
            outs.append(h)
        return self.head(self.merge(torch.cat(outs, 2)).amax(1))


ARCHITECTURES = {"pointnet": PointNet, "dgcnn": DGCNN}
EPOCHS = {"pointnet": 8, "dgcnn": 5}


def train_point_model(arch: str, *, seed: int = 0, epochs: int | None = None, lr: float = 3e-3,
                      batch_size: int = 32, device: str | torch.device | None = None) -> nn.Module:
    """Train `arch` ("pointnet" or "dgcnn") on ``pointcloud_data.shapes("train")`` (500
    clouds of 128 points); return the model in eval mode on `device` (the CPU by default).

    `seed` fixes the initial weights (drawn under a forked global RNG, so the caller's stream is
    untouched) and the batch order: the same seed gives the same weights. Adam (`lr` 3e-3 and
    `batch_size` 32 by default), `epochs` from `EPOCHS` by default. The zoo stores both models
    with their recipes (`robustlab.zoo_beyond`).
    """
    check_choice(arch, tuple(ARCHITECTURES), "arch")
    check_seed(seed)
    epochs = EPOCHS[arch] if epochs is None else check_positive(epochs, "epochs", integer=True)
    check_positive(lr, "lr")
    check_positive(batch_size, "batch_size", integer=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ARCHITECTURES[arch]()
    device = torch.device("cpu") if device is None else torch.device(device)
    points, labels = shapes("train")
    fit(model.to(device), (points.to(device), labels.to(device)), epochs=epochs, lr=lr,
        batch_size=batch_size, seed=seed, progress=False, device=device)
    return model.eval()


def point_accuracy(model: nn.Module, points: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy of `model` on clouds `points` (N, P, 3) against labels `y`."""
    check_points(points)
    dev = model_device(model) or points.device
    return correct(model, points.to(dev), y.to(dev)).float().mean().item()

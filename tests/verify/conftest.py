"""What the verifier tests share: small random networks of every layer the reader takes, points
drawn from a ball, and PGD pushing one logit (or margin) up or down."""

import functools

import torch
from torch import nn

from robustlab.attacks import pgd
from robustlab.models import Normalize
from robustlab.norms import clip_box, random_in_ball


def randomise_batch_norm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial eval statistics and affine parameters; eval mode."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(n, generator=g))
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.2)
    return model.eval()


def small_nets() -> dict:
    """Random digits-sized (1, 8, 8) networks covering the layers the reader takes."""
    torch.manual_seed(0)
    nets = {
        "conv-bn-avgpool": nn.Sequential(
            Normalize([0.3], [0.2]), nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
            nn.AvgPool2d(2), nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
            nn.Linear(24, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 5)),
        "maxpool-overlap": nn.Sequential(
            nn.Conv2d(1, 3, 3, stride=2), nn.ReLU(), nn.MaxPool2d(2, stride=1),
            nn.Conv2d(3, 4, 2, dilation=1), nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1),
            nn.Flatten(), nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)),
        "mlp-bn-nested": nn.Sequential(
            nn.Flatten(), nn.Sequential(nn.Linear(64, 20), nn.BatchNorm1d(20), nn.ReLU(), nn.Dropout(0.5)),
            nn.Linear(20, 20), nn.ReLU(), nn.Identity(), nn.Linear(20, 4)),
        "groups-adaptive": nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=2, dilation=2, groups=4),
            nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 5)),
    }
    return {k: randomise_batch_norm(m, i) for i, (k, m) in enumerate(nets.items())}


def ball_points(x: torch.Tensor, eps: float, norm: str, n: int, seed: int = 0) -> torch.Tensor:
    """`n` points (n, N, C, H, W) of the ball around each x, inside [0, 1]: random draws and,
    for L-inf, random corners."""
    g = torch.Generator().manual_seed(seed)
    pts = []
    for i in range(n):
        if norm == "linf" and i % 2:
            d = (torch.randint(0, 2, x.shape, generator=g) * 2 - 1).to(x) * eps
        else:
            d = random_in_ball(x, eps, norm, g)
        pts.append(x + clip_box(x, d))
    return torch.stack(pts)


class Pushed(nn.Module):
    """Logits (0, sign * (C @ model(x))[s]): targeted PGD towards class 1 pushes row s of
    C @ logits up (sign = 1) or down (sign = -1)."""

    def __init__(self, model, row, sign, C=None):
        super().__init__()
        self.model, self.row, self.sign, self.C = model, row, sign, C

    def forward(self, x):
        z = self.model(x)
        if self.C is not None:
            z = torch.einsum("nsk,nk->ns", self.C, z)
        z = self.sign * z[:, self.row:self.row + 1]
        return torch.cat([torch.zeros_like(z), z], 1)


def pgd_extremes(model, x, eps, norm, C=None, steps=20):
    """The (min, max) of every row of the logits (or C @ logits) that PGD finds, (N, S) each."""
    with torch.no_grad():
        s = (model(x) if C is None else torch.einsum("nsk,nk->ns", C, model(x))).shape[1]
    one = torch.ones(len(x), dtype=torch.long)
    out = {1: [], -1: []}
    for sign in (1, -1):
        for row in range(s):
            adv = pgd(Pushed(model, row, sign, C), x, one, eps=eps, alpha=eps / 4, steps=steps,
                      norm=norm, targeted=True, generator=torch.Generator().manual_seed(row))
            with torch.no_grad():
                z = model(adv) if C is None else torch.einsum("nsk,nk->ns", C, model(adv))
            out[sign].append(z[:, row])
    return torch.stack(out[-1], 1), torch.stack(out[1], 1)


def random_mlp(sizes: list, seed: int) -> nn.Module:
    """A ReLU MLP on (1, 1, sizes[0]) inputs with N(0, 1) weights scaled by the fan-in, its first
    layer centred on x = 0.5, so that its decision boundaries cross the box [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    layers = [nn.Flatten()]
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        lin = nn.Linear(a, b)
        with torch.no_grad():
            lin.weight.copy_(torch.randn(b, a, generator=g) * (3 if i == 0 else 1.5 / a ** 0.5))
            lin.bias.copy_(0.1 * torch.randn(b, generator=g)
                           - (lin.weight.sum(1) * 0.5 if i == 0 else 0))
        layers += [lin, nn.ReLU()]
    return nn.Sequential(*layers[:-1]).eval()


def tiny_mlps() -> dict:
    """Random ReLU MLPs small enough for the exact verifiers: (model, input shape)."""
    return {"4-8-8-3": (random_mlp([4, 8, 8, 3], 0), (1, 1, 4)),
            "9-12-4": (random_mlp([9, 12, 4], 1), (1, 1, 9)),
            "4-6-6-6-3": (random_mlp([4, 6, 6, 6, 3], 2), (1, 1, 4))}


def labelled_points(model, shape, n: int, seed: int = 0):
    """`n` random points of [0, 1]^shape and the model's own labels for them."""
    x = torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return x, model(x).argmax(1)


@functools.cache
def boundary_suite(norm: str = "linf") -> tuple:
    """24 instances (name, model, x (1, ...), y (1,), eps) for the complete verifiers, with eps
    at 0.9, 0.98, 1.02 and 1.1 times the exact minimal distortion of each point: half robust,
    half not, most of them too close to the boundary for CROWN alone."""
    from robustlab.verify import min_distortion
    suite = []
    for name, (model, shape) in tiny_mlps().items():
        x, y = labelled_points(model, shape, 2, seed=11)
        dist = min_distortion(model, x, y, norm=norm).distortion
        for i in range(2):
            for f in (0.9, 0.98, 1.02, 1.1):
                suite.append((name, model, x[i:i + 1], y[i:i + 1], f * dist[i].item()))
    return tuple(suite)


class ShiftReLU(nn.ReLU):
    """A ReLU subclass with its own forward (issue 15, item 2): the reader must refuse it."""

    def forward(self, x):
        return torch.relu(x - 0.2)


class TripleLinear(nn.Linear):
    """A Linear subclass whose forward triples the output: the reader must refuse it."""

    def forward(self, x):
        return 3 * super().forward(x)

"""crown's options: alpha-CROWN (sound, never looser than CROWN, tighter on average) and the ReLU
splits branch and bound bounds under (sound on the subdomain the phases define)."""

import pytest
import torch

from robustlab.verify import crown, margin_spec, read_network
from robustlab.verify._bounds import Ball
from robustlab.verify.crown import crown_bounds, maxpool_relaxation
from robustlab.verify.network import Affine, ReLU

from ..conftest import leaves_as_found, messy_model
from .conftest import ball_points, random_mlp, small_nets, tiny_mlps
from .test_bounds import check_soundness


def alpha_crown(model, x, *, eps, norm="linf", C=None):
    return crown(model, x, eps=eps, norm=norm, C=C, alpha=True, alpha_steps=10)


@pytest.mark.parametrize("norm, eps", [("linf", 0.05), ("l2", 0.5), ("l1", 2.0)])
def test_alpha_is_sound_on_digits_mlp(digits_mlp, eight, norm, eps):
    x, y = eight
    check_soundness(digits_mlp, x, eps, norm, alpha_crown)
    check_soundness(digits_mlp, x[:4], eps, norm, alpha_crown, C=margin_spec(y[:4], 10))


@pytest.mark.parametrize("name", list(small_nets()))
def test_alpha_is_sound_on_random_nets(name, eight):
    check_soundness(small_nets()[name], eight[0][:4], 0.1, "linf", alpha_crown, pgd_steps=10)


def test_alpha_never_looser_and_tighter_on_average(digits_mlp, digits_test):
    """Measured on 50 test digits, L-inf eps 0.05: mean logit-bound width CROWN 5.06, alpha 4.94;
    mean lower bound on the margins up by 0.017 (0.096 at eps 0.1, where alpha certifies 15
    digits to CROWN's 14), 20 steps, lr 0.1."""
    x, y = digits_test[0][:50], digits_test[1][:50]
    for C in (None, margin_spec(y, 10)):
        plain, opt = crown(digits_mlp, x, eps=0.05, C=C), crown(digits_mlp, x, eps=0.05, C=C, alpha=True)
        assert (opt.lower >= plain.lower - 1e-6).all() and (opt.upper <= plain.upper + 1e-6).all()
        assert opt.width.mean() < plain.width.mean() - 1e-3


def test_alpha_works_under_no_grad_and_leaves_the_model_as_found(digits_test):
    model, x = messy_model(), digits_test[0][:3].clone()
    with torch.no_grad():
        bounds = leaves_as_found(lambda: crown(model, x, eps=0.02, alpha=True, alpha_steps=3), model, x)
    assert torch.isfinite(bounds.lower).all()


def test_alpha_bad_input_names_the_argument(digits_mlp, eight):
    x = eight[0][:2]
    for kw, err, name in [({"alpha_steps": 0}, ValueError, "alpha_steps"),
                          ({"alpha_steps": 2.5}, TypeError, "alpha_steps"),
                          ({"alpha_lr": -0.1}, ValueError, "alpha_lr"),
                          ({"alpha_lr": float("nan")}, ValueError, "alpha_lr")]:
        with pytest.raises(err, match=name):
            crown(digits_mlp, x, eps=0.1, alpha=True, **kw)
    with pytest.raises(TypeError, match="alpha"):
        crown(digits_mlp, x, eps=0.1, alpha="yes")
    with pytest.raises(ValueError, match="C must have shape"):
        crown(digits_mlp, x, eps=0.1, alpha=True, C=torch.ones(3, 2, 10))
    with pytest.raises(ValueError, match="eps"):
        crown(digits_mlp, x, eps=-0.1, alpha=True)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        crown(digits_mlp, x, eps=0.1, alpha=True)


@pytest.mark.parametrize("norm, eps", [("linf", 0.15), ("l1", 0.4)])
def test_split_bounds_are_sound_on_their_subdomain(norm, eps):
    """Split the first unstable ReLU of each layer both ways: every sampled point of the ball
    whose own phase matches a split lies inside that subdomain's bounds. (Not always tighter
    than the whole ball's: the adaptive slopes of later layers change with the clamped bounds,
    which is why branch_and_bound keeps the parent's bound where it is better.)"""
    model, shape = tiny_mlps()["4-8-8-3"]
    x = torch.rand(1, *shape, generator=torch.Generator().manual_seed(0)).double()
    model = model.double()
    net = read_network(model, shape)
    ball = Ball(x, eps, norm)
    with torch.no_grad():
        pre, _ = crown_bounds(net, ball)
    relus = [i for i, layer in enumerate(net.layers) if isinstance(layer, ReLU)]
    pts = ball_points(x, eps, norm, 400).flatten(0, 1)
    with torch.no_grad():
        z, acts = model(pts), [model[:i + 1](pts) for i in range(1, len(model), 2)]  # pre-activations
    checked = 0
    for layer, (lo, up), act in zip(relus, pre, acts):
        both = ((lo < 0) & (up > 0))[0] & (act > 0).any(0) & (act < 0).any(0)  # the samples cross 0
        if not both.any():
            continue
        n = both.nonzero()[0, 0].item()
        for phase in (1, -1):
            splits = {i: torch.zeros(1, *net.layers[i].shape, dtype=torch.int8) for i in relus}
            splits[layer][0, n] = phase
            with torch.no_grad():
                _, (low, upp) = crown_bounds(net, ball, splits=splits)
            inside = act[:, n] >= 0 if phase > 0 else act[:, n] <= 0
            slack = 1e-9 * (1 + z.abs())
            assert (z[inside] >= low - slack[inside]).all() and (z[inside] <= upp + slack[inside]).all()
            checked += 1
    assert checked >= 2


def reference_crown(net, x: torch.Tensor, eps: float):
    """CROWN written out one example at a time with dense matrices (the formulas, no batching):
    bounds on each nonlinear layer's input and on the logits, over the L-inf box of x in [0, 1].
    Affine layers become (W, b) by applying them to the unit vectors; a lower bound's row takes
    a_l where its coefficient is positive and a_u (plus a_u's offset b_u) where negative, an
    upper bound's row the reverse; max pooling uses crown's own relaxation as a matrix."""
    def dense(layer):
        d_in = torch.Size(layer.in_shape).numel()
        eye = torch.eye(d_in, dtype=x.dtype).view(d_in, *layer.in_shape)
        bias = layer.bias * torch.ones(layer.out_shape, dtype=x.dtype)
        return layer.linear(eye).flatten(1).T, bias.flatten()

    def bound(layers, relax, e, d):
        lam_lo = lam_up = torch.eye(d, dtype=x.dtype)
        c_lo = c_up = torch.zeros(d, dtype=x.dtype)
        for i in reversed(range(len(layers))):
            layer = layers[i]
            if isinstance(layer, Affine):
                w, b = dense(layer)
                c_lo, c_up = c_lo + lam_lo @ b, c_up + lam_up @ b
                lam_lo, lam_up = lam_lo @ w, lam_up @ w
            elif isinstance(layer, ReLU):
                a_l, a_u, b_u = relax[i]
                lp, ln = lam_lo.clamp(min=0), lam_lo.clamp(max=0)
                up_, un = lam_up.clamp(min=0), lam_up.clamp(max=0)
                c_lo, c_up = c_lo + ln @ b_u, c_up + up_ @ b_u
                lam_lo, lam_up = lp * a_l + ln * a_u, up_ * a_u + un * a_l
            else:  # y >= P x (P picks sel); y <= E P x + (1 - E) top
                sel, exact, top = relax[i]
                pick = torch.zeros(len(sel), torch.Size(layer.in_shape).numel(), dtype=x.dtype)
                pick[torch.arange(len(sel)), sel] = 1
                lp, ln = lam_lo.clamp(min=0), lam_lo.clamp(max=0)
                up_, un = lam_up.clamp(min=0), lam_up.clamp(max=0)
                c_lo, c_up = c_lo + ln @ ((1 - exact) * top), c_up + up_ @ ((1 - exact) * top)
                lam_lo, lam_up = (lp + ln * exact) @ pick, (un + up_ * exact) @ pick
        lo_x, up_x = (e - eps).clamp(0, 1).flatten(), (e + eps).clamp(0, 1).flatten()
        mid, rad = (lo_x + up_x) / 2, (up_x - lo_x) / 2
        return lam_lo @ mid - lam_lo.abs() @ rad + c_lo, lam_up @ mid + lam_up.abs() @ rad + c_up

    out = []
    for e in x:
        relax, pre, shape = {}, [], net.in_shape
        for i, layer in enumerate(net.layers):
            if not isinstance(layer, Affine):
                if i and isinstance(net.layers[i - 1], ReLU):
                    lo, up = pre[-1][0].clamp(min=0), pre[-1][1].clamp(min=0)
                else:
                    lo, up = bound(net.layers[:i], relax, e, torch.Size(shape).numel())
                pre.append((lo, up))
                if isinstance(layer, ReLU):
                    unstable = (lo < 0) & (up > 0)
                    a_u = torch.where(unstable, up / (up - lo).where(unstable, torch.ones_like(up)),
                                      (lo >= 0).to(x.dtype))
                    relax[i] = (torch.where(unstable, (up > -lo).to(x.dtype), (lo >= 0).to(x.dtype)),
                                a_u, torch.where(unstable, -lo * a_u, torch.zeros_like(lo)))
                else:
                    sel, exact, top = maxpool_relaxation(layer, lo.view(1, *shape), up.view(1, *shape))
                    relax[i] = (sel[0, 0], exact[0, 0], top[0, 0])
            shape = layer.shape if isinstance(layer, ReLU) else layer.out_shape
        out.append((pre, bound(net.layers, relax, e, torch.Size(shape).numel())))
    return out


@pytest.mark.parametrize("name", ["mlp", "mlp-bn-nested", "conv-bn-avgpool", "maxpool-overlap",
                                  "groups-adaptive"])
def test_crown_is_the_written_out_back_substitution(name):
    """crown_bounds (shared rows, lower and upper coefficients apart only after the first
    relaxation, batched) gives the bounds of the one-example dense back-substitution, to float64
    rounding, on every nonlinear layer's input and on the logits."""
    model = random_mlp([64, 24, 16, 5], 3) if name == "mlp" else small_nets()[name]
    model = model.double().eval()
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    net = read_network(model, (1, 8, 8), like=x)
    with torch.no_grad():
        pre, (lower, upper) = crown_bounds(net, Ball(x, 0.05, "linf"))
        ref = reference_crown(net, x, 0.05)
    unstable = sum(((lo < 0) & (up > 0)).sum().item() for lo, up in pre)
    assert unstable > 0  # the relaxations are exercised, not only stable neurons
    for n, (ref_pre, (ref_lo, ref_up)) in enumerate(ref):
        assert torch.allclose(lower[n], ref_lo, rtol=0, atol=1e-9)
        assert torch.allclose(upper[n], ref_up, rtol=0, atol=1e-9)
        for (lo, up), (r_lo, r_up) in zip(pre, ref_pre):
            assert torch.allclose(lo[n].flatten(), r_lo, rtol=0, atol=1e-9)
            assert torch.allclose(up[n].flatten(), r_up, rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", ["mlp", "mlp-bn-nested", "conv-bn-avgpool", "maxpool-overlap",
                                  "groups-adaptive"])
def test_unstable_rows_only_give_the_same_or_tighter_bounds(name):
    """every_neuron=False (what crown uses) bounds by back-substitution only the neurons that
    interval bounds leave unstable: the logit bounds are never looser than bounding every
    neuron, and equal on a ReLU MLP (they differ only where CROWN is looser than the interval
    on a neuron the interval finds stable, or where a max pool reads the stable ones), and each
    neuron's two intervals meet (both contain its range over the ball)."""
    model = random_mlp([64, 24, 16, 5], 3) if name == "mlp" else small_nets()[name]
    model = model.double().eval()
    x = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    net = read_network(model, (1, 8, 8), like=x)
    ball = Ball(x, 0.01, "linf")
    with torch.no_grad():
        pre, (lower, upper) = crown_bounds(net, ball)
        fast_pre, (fast_lo, fast_up) = crown_bounds(net, ball, every_neuron=False)
    assert (fast_lo >= lower - 1e-9).all() and (fast_up <= upper + 1e-9).all()
    for (lo, up), (f_lo, f_up) in zip(pre, fast_pre):
        assert ((f_lo <= up + 1e-9) & (f_up >= lo - 1e-9)).all()
    if name == "mlp":
        assert torch.allclose(fast_lo, lower, rtol=0, atol=1e-9)
        assert torch.allclose(fast_up, upper, rtol=0, atol=1e-9)

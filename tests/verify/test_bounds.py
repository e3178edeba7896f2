"""interval (IBP) and crown (CROWN / DeepPoly): sound, exact where they must be, CROWN tighter in
aggregate, monotone in eps, specifications, hygiene and bad input."""

import pytest
import torch
from torch import nn

from robustlab import models
from robustlab.attacks import pgd
from robustlab.models import Normalize
from robustlab.norms import flat_norm
from robustlab.verify import Bounds, crown, interval, margin_spec, read_exact, rounding_bound

from ..conftest import leaves_as_found, linear_classifier, messy_model
from .conftest import ball_points, pgd_extremes, small_nets

VERIFIERS = {"interval": interval, "crown": crown}


def assert_sound(bounds: Bounds, z: torch.Tensor, what: str):
    slack = 1e-5 * (1 + z.abs())
    below, above = bounds.lower - slack - z, z - bounds.upper - slack
    assert (below <= 0).all() and (above <= 0).all(), (
        f"{what}: a value leaves the bounds by {max(below.max().item(), above.max().item()):.3g}")


def check_soundness(model, x, eps, norm, verify, C=None, pgd_steps=20):
    bounds = verify(model, x, eps=eps, norm=norm, C=C)
    pts = ball_points(x, eps, norm, 16)
    assert (flat_norm((pts - x).flatten(0, 1), norm) <= eps * (1 + 1e-5) + 1e-7).all()
    with torch.no_grad():
        for p in pts:
            z = model(p) if C is None else torch.einsum("nsk,nk->ns", C, model(p))
            assert_sound(bounds, z, "a random point of the ball")
    lo, up = pgd_extremes(model, x, eps, norm, C, steps=pgd_steps)
    assert_sound(bounds, lo, "PGD minimising")
    assert_sound(bounds, up, "PGD maximising")
    return bounds, lo, up


@pytest.mark.parametrize("verify", list(VERIFIERS))
@pytest.mark.parametrize("norm, eps", [("linf", 0.05), ("l2", 0.5), ("l1", 2.0)])
def test_sound_on_digits_mlp(digits_mlp, eight, verify, norm, eps):
    bounds, lo, up = check_soundness(digits_mlp, eight[0], eps, norm, VERIFIERS[verify])
    assert (bounds.width > 0).all()


@pytest.mark.parametrize("verify", list(VERIFIERS))
def test_sound_on_digits_cnn(digits_cnn, eight, verify):
    x = eight[0][:3]
    check_soundness(digits_cnn, x, 0.02, "linf", VERIFIERS[verify], pgd_steps=10)
    check_soundness(digits_cnn, x, 0.3, "l2", VERIFIERS[verify], pgd_steps=10)


@pytest.mark.parametrize("name", list(small_nets()))
@pytest.mark.parametrize("norm, eps", [("linf", 0.1), ("l2", 0.5), ("l1", 1.0)])
def test_sound_on_random_nets(name, norm, eps, eight):
    model, x = small_nets()[name], eight[0][:4]
    for verify in VERIFIERS.values():
        check_soundness(model, x, eps, norm, verify, pgd_steps=10)


@pytest.mark.parametrize("verify", list(VERIFIERS))
def test_eps_zero_gives_the_logits(verify, eight, digits_mlp, digits_cnn):
    x = eight[0][:4]
    for model in (digits_mlp, digits_cnn, *small_nets().values()):
        with torch.no_grad():
            z = model(x)
        net, u = read_exact(model, x, x)
        err = rounding_bound(net, x, x, u)
        for norm in ("linf", "l2"):
            lo, up = VERIFIERS[verify](model, x, eps=0.0, norm=norm)
            # the float logits widened by twice the rounding bound (the model's and the verifier's)
            assert (lo <= z).all() and (z <= up).all()
            torch.testing.assert_close(lo, z - 2 * err, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(up, z + 2 * err, rtol=1e-5, atol=1e-5)


def linear_models():
    """Affine models (no ReLU): a linear classifier and Normalize-conv-avgpool-linear."""
    torch.manual_seed(1)
    conv = nn.Sequential(Normalize([0.4], [0.3]), nn.Conv2d(1, 3, 3, stride=2, padding=1),
                         nn.AvgPool2d(2), nn.Flatten(), nn.Linear(12, 5)).eval()
    return {"linear": linear_classifier(), "conv": conv}


@pytest.mark.parametrize("name", ["linear", "conv"])
@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_linear_model_bounds_are_exact(name, norm):
    """W x + b -+ eps ||W_i||_q, q the dual norm (x at 0.5, eps small: no clipping at 0 or 1).

    IBP bounds the first affine layers as one map only for L2 / L1 (a ball is not a box); under
    L-inf it goes layer by layer, exact for one affine layer, sound but looser for a chain."""
    model = linear_models()[name]
    x = 0.5 + 0.01 * torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    eps = 0.02 if norm == "linf" else 0.05
    W = torch.autograd.functional.jacobian(lambda v: model(v.view(1, 1, 8, 8))[0], x[0].flatten())
    q = {"linf": 1, "l2": 2, "l1": float("inf")}[norm]
    with torch.no_grad():
        z = model(x)
    box = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
    net, u = read_exact(model, *box)
    # exact up to the widening by twice the model's rounding bound over the box
    radius = eps * W.norm(p=q, dim=1) + 2 * rounding_bound(net, *box, u)
    for verify in VERIFIERS.values():
        lo, up = verify(model, x, eps=eps, norm=norm)
        if verify is interval and norm == "linf" and name == "conv":
            assert (lo <= z - radius + 1e-5).all() and (up >= z + radius - 1e-5).all()
            continue
        torch.testing.assert_close(lo, z - radius, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(up, z + radius, rtol=1e-5, atol=1e-5)


def mean_widths(model, x, eps, norm="linf"):
    return tuple(v(model, x, eps=eps, norm=norm).width.mean().item() for v in VERIFIERS.values())


def test_crown_tighter_than_ibp_in_aggregate(digits_mlp, digits_cnn, digits_test):
    """Mean width of the logit bounds under L-inf, 100 test digits on the MLP: measured IBP 5.18
    / CROWN 0.93 at eps 0.01, IBP 25.1 / CROWN 5.12 at eps 0.05; on the CNN (8 digits, eps 0.01)
    IBP 177 / CROWN 2.2. CROWN is not tighter neuron by neuron in general, so the mean is tested."""
    x = digits_test[0][:100]
    for eps in (0.01, 0.05):
        ibp, cr = mean_widths(digits_mlp, x, eps)
        assert cr < 0.5 * ibp, f"digits-mlp eps {eps}: CROWN {cr:.3g} vs IBP {ibp:.3g}"
    ibp, cr = mean_widths(digits_cnn, x[:4], 0.01)
    assert cr < 0.5 * ibp, f"digits-cnn: CROWN {cr:.3g} vs IBP {ibp:.3g}"
    for name, model in small_nets().items():
        ibp, cr = mean_widths(model, x[:8], 0.05, "l2")
        assert cr <= ibp * (1 + 1e-5), f"{name}: CROWN {cr:.3g} vs IBP {ibp:.3g}"


def test_crown_is_exact_where_ibp_loses_the_correlation():
    """f(x) = relu(x) - relu(x) through two stable active neurons is 0: CROWN's back-substitution
    sees it; IBP adds the two intervals and gets width 2 * 2 eps."""
    first, second = nn.Linear(64, 2), nn.Linear(2, 1)
    with torch.no_grad():
        first.weight.zero_()
        first.weight[:, 0] = 1.0
        first.bias.zero_()
        second.weight.copy_(torch.tensor([[1.0, -1.0]]))
        second.bias.zero_()
    model = nn.Sequential(nn.Flatten(), first, nn.ReLU(), second)
    x = torch.full((2, 1, 8, 8), 0.5)
    cr, ibp = crown(model, x, eps=0.1), interval(model, x, eps=0.1)
    net, u = read_exact(model, (x - 0.1), (x + 0.1))
    rounding = 4 * rounding_bound(net, x - 0.1, x + 0.1, u)  # each bound is widened by twice it
    torch.testing.assert_close(cr.width, rounding, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(ibp.width, 0.4 + rounding)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_monotone_in_eps(digits_mlp, eight, norm):
    """IBP's bounds grow with eps entry by entry (intervals are monotone); CROWN's adaptive slopes
    switch with the intermediate bounds, so only its mean width is checked."""
    x, scale = eight[0], (1 if norm == "linf" else 10)
    prev_i = prev_c = None
    for eps in (0.0, 0.005, 0.01, 0.02, 0.05):
        b = interval(digits_mlp, x, eps=eps * scale, norm=norm)
        if prev_i is not None:
            assert (b.lower <= prev_i.lower + 1e-5).all() and (b.upper >= prev_i.upper - 1e-5).all()
            assert crown(digits_mlp, x, eps=eps * scale, norm=norm).width.mean() >= prev_c
        prev_i, prev_c = b, crown(digits_mlp, x, eps=eps * scale, norm=norm).width.mean()


@pytest.mark.parametrize("verify", list(VERIFIERS))
def test_margin_spec_is_sound_and_tighter_than_logit_bounds(digits_mlp, digits_test, verify):
    x, y = digits_test[0][:16], digits_test[1][:16]
    C = margin_spec(y, 10)
    bounds, _, _ = check_soundness(digits_mlp, x[:4], 0.03, "linf", VERIFIERS[verify], C=C[:4], pgd_steps=10)
    assert bounds.lower.shape == (4, 9)
    spec = VERIFIERS[verify](digits_mlp, x, eps=0.03, C=C)
    lo, up = VERIFIERS[verify](digits_mlp, x, eps=0.03)
    via_logits = (torch.einsum("nsk,nk->ns", C.clamp(min=0), lo)
                  + torch.einsum("nsk,nk->ns", C.clamp(max=0), up))
    assert (spec.lower >= via_logits - 1e-4).all()
    assert spec.lower.mean() > via_logits.mean()
    # one shared (S, K) specification is the same as it repeated per example
    shared = VERIFIERS[verify](digits_mlp, x, eps=0.03, C=C[0])
    repeated = VERIFIERS[verify](digits_mlp, x, eps=0.03, C=C[:1].expand(16, -1, -1))
    torch.testing.assert_close(shared.lower, repeated.lower)


def test_verified_points_resist_pgd(digits_mlp, digits_test):
    x, y = digits_test[0][:64], digits_test[1][:64]
    eps = 0.02
    verified = crown(digits_mlp, x, eps=eps, C=margin_spec(y, 10)).lower.amin(1) > 0
    assert verified.sum() >= 10, f"only {verified.sum()} of 64 verified at eps {eps}"
    assert (interval(digits_mlp, x, eps=eps, C=margin_spec(y, 10)).lower.amin(1) > 0).sum() <= verified.sum()
    xv, yv = x[verified], y[verified]
    for loss in ("ce", "margin"):
        adv = pgd(digits_mlp, xv, yv, eps=eps, alpha=eps / 4, steps=40, loss=loss,
                  generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            assert (digits_mlp(adv).argmax(1) == yv).all(), "PGD broke a verified point"


@pytest.mark.parametrize("verify", list(VERIFIERS))
def test_batch_equals_one_at_a_time(digits_mlp, eight, verify):
    x = eight[0][:4]
    whole = VERIFIERS[verify](digits_mlp, x, eps=0.03)
    for i in range(4):
        one = VERIFIERS[verify](digits_mlp, x[i:i + 1], eps=0.03)
        torch.testing.assert_close(one.lower, whole.lower[i:i + 1], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(one.upper, whole.upper[i:i + 1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("verify", list(VERIFIERS))
def test_hygiene(verify, eight):
    """A messy model (train mode, dropout, batch norm, frozen layer, stale grads) is left as
    found, and bounded as in eval mode; works inside no_grad and inference_mode."""
    x = eight[0][:4]
    model = messy_model()
    b = leaves_as_found(lambda: VERIFIERS[verify](model, x, eps=0.05), model, x)
    assert not b.lower.requires_grad and not b.upper.requires_grad
    evaluated = messy_model().eval()
    with torch.no_grad():
        for p in ball_points(x, 0.05, "linf", 8):
            assert_sound(b, evaluated(p), "the eval-mode model")
        inside = VERIFIERS[verify](model, x, eps=0.05)
    with torch.inference_mode():
        infer = VERIFIERS[verify](model, x, eps=0.05)
    torch.testing.assert_close(inside.lower, b.lower)
    torch.testing.assert_close(infer.upper, b.upper)


@pytest.mark.parametrize("verify", list(VERIFIERS))
def test_float64_agrees_with_float32(verify, eight):
    model = small_nets()["conv-bn-avgpool"]
    x = eight[0][:4]
    b32 = VERIFIERS[verify](model, x, eps=0.05)
    b64 = VERIFIERS[verify](model.double(), x.double(), eps=0.05)
    model.float()
    assert b64.lower.dtype == torch.float64
    torch.testing.assert_close(b64.lower.float(), b32.lower, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("verify", list(VERIFIERS))
def test_cuda_agrees_with_cpu(verify, eight, digits_cnn):
    x = eight[0][:3]
    cpu = VERIFIERS[verify](digits_cnn, x, eps=0.02, C=margin_spec(eight[1][:3], 10))
    gpu = VERIFIERS[verify](models.pretrained("digits-cnn", device="cuda"), x.cuda(), eps=0.02,
                            C=margin_spec(eight[1][:3].cuda(), 10))
    torch.testing.assert_close(gpu.lower.cpu(), cpu.lower, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("verify", list(VERIFIERS))
def test_bad_arguments_are_named(verify, digits_mlp, eight):
    f, x = VERIFIERS[verify], eight[0][:2]
    with pytest.raises(ValueError, match="eps must be a finite number >= 0"):
        f(digits_mlp, x, eps=-0.1)
    with pytest.raises(ValueError, match="norm must be one of"):
        f(digits_mlp, x, eps=0.1, norm="l0")
    with pytest.raises(ValueError, match=r"C must have shape \(S, 10\) or \(2, S, 10\)"):
        f(digits_mlp, x, eps=0.1, C=torch.ones(3, 9))
    with pytest.raises(ValueError, match="C must have shape"):
        f(digits_mlp, x, eps=0.1, C=torch.ones(5, 3, 10))
    with pytest.raises(TypeError, match="C must be a torch.Tensor"):
        f(digits_mlp, x, eps=0.1, C=[[1.0] * 10])
    with pytest.raises(ValueError, match="C contains NaN"):
        f(digits_mlp, x, eps=0.1, C=torch.full((1, 10), float("nan")))
    with pytest.raises(ValueError, match=r"x must lie in \[0, 1\]"):
        f(digits_mlp, x + 2, eps=0.1)
    with pytest.raises(TypeError, match="x has dtype torch.float64"):
        f(digits_mlp, x.double(), eps=0.1)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        f(lambda v: v, x, eps=0.1)

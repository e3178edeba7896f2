import pytest
import torch

from robustlab.attacks.spatial import flow_loss, flow_warp, stadv

from ..conftest import check_conventions, messy_model


def tutorial_warp(x, flow):
    """The tutorial's formula, one output pixel at a time: sum over input pixels q of
    x_q (1 - |u - u_q|)(1 - |v - v_q|), kept to the (up to four) q with both factors positive,
    at the sampled point (u, v) = (col + du, row + dv) clamped into the image."""
    n, c, h, w = x.shape
    out = torch.zeros_like(x)
    for b in range(n):
        for r in range(h):
            for s in range(w):
                u = min(max(s + flow[b, 0, r, s].item(), 0), w - 1)
                v = min(max(r + flow[b, 1, r, s].item(), 0), h - 1)
                for rq in range(h):
                    for sq in range(w):
                        wu, wv = 1 - abs(u - sq), 1 - abs(v - rq)
                        if wu > 0 and wv > 0:
                            out[b, :, r, s] += x[b, :, rq, sq] * wu * wv
    return out


def test_zero_flow_is_identity():
    x = torch.rand(3, 2, 5, 7)
    assert torch.allclose(flow_warp(x, torch.zeros(3, 2, 5, 7)), x, atol=1e-6)


def test_integer_flow_shifts_exactly():
    x = torch.rand(2, 1, 6, 6)
    right = torch.zeros(2, 2, 6, 6)
    right[:, 0] = 1  # every pixel reads its right-hand neighbour: the image moves left
    assert torch.allclose(flow_warp(x, right)[..., :, :-1], x[..., :, 1:], atol=1e-6)
    down = torch.zeros(1, 2, 6, 6)
    down[:, 1] = -1  # read the pixel above, broadcast over the batch: the image moves down
    assert torch.allclose(flow_warp(x, down)[..., 1:, :], x[..., :-1, :], atol=1e-6)


def test_flow_warp_matches_tutorial_formula():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 2, 4, 5, generator=g)
    flow = 3 * torch.rand(2, 2, 4, 5, generator=g) - 1.5  # some points fall outside: clamped
    assert torch.allclose(flow_warp(x, flow), tutorial_warp(x, flow), atol=1e-5)


def test_flow_warp_gradients():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 1, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    flow = (0.3 + 0.4 * torch.rand(1, 2, 4, 4, generator=g, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(flow_warp, (x, flow))


def test_flow_loss():
    const = torch.full((2, 2, 5, 5), 0.7)
    assert torch.equal(flow_loss(const), torch.zeros(2))
    bump = torch.zeros(1, 2, 5, 5)
    bump[0, 0, 2, 2] = 1.0  # four neighbour pairs of length 1, each counted from both sides
    assert torch.allclose(flow_loss(bump), torch.tensor([8.0]), atol=1e-4)
    f = torch.zeros(1, 2, 5, 5, requires_grad=True)
    flow_loss(f).sum().backward()
    assert torch.isfinite(f.grad).all()


@pytest.mark.parametrize("targeted", [False, True])
def test_stadv_conventions(batch, targeted):
    x, y = batch
    a = check_conventions(stadv, x, y, steps=10, targeted=targeted)
    b = stadv(messy_model(), x, y, steps=10, targeted=targeted)
    assert torch.equal(a, b), "stAdv is deterministic"
    adv, flow = stadv(messy_model(), x, y, steps=3, return_flow=True)
    assert flow.shape == (16, 2, 8, 8) and torch.allclose(adv, flow_warp(x, flow).clamp(0, 1))


def test_stadv_fools_digits_cnn(digits_cnn, digits_test):
    x, y = digits_test
    x, y = x[:32], y[:32]
    adv, flow = stadv(digits_cnn, x, y, return_flow=True)
    acc = (digits_cnn(adv).argmax(1) == y).float().mean().item()
    print(f"stAdv accuracy {acc:.3f}, largest displacement {flow.abs().max():.2f} px")
    assert acc < 0.1
    assert flow.abs().max() < 2.0, "stAdv should move pixels by less than a couple of pixels"


def test_stadv_targeted_reaches_target(digits_cnn, digits_test):
    x, y = digits_test
    x, t = x[:32], (y[:32] + 1) % 10
    adv = stadv(digits_cnn, x, t, targeted=True)
    assert (digits_cnn(adv).argmax(1) == t).float().mean() > 0.9


def test_bad_images_and_flows(batch, digits_cnn):
    x, y = batch
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        stadv(digits_cnn, x * 3, y)
    with pytest.raises(ValueError, match="flow"):
        flow_warp(x, torch.zeros(16, 2, 7, 8))

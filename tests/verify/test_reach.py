"""reach / reach_box (Xiang et al.'s hyper-rectangles): the IBP rule itself, sound, tightened by
nested partitions towards the true range on 2-input nets, exact on affine nets, bad input,
hygiene."""

import pytest
import torch
from torch import nn

from robustlab.models import Normalize
from robustlab.verify import interval, reach, reach_box, read_exact, rounding_bound

from ..conftest import leaves_as_found, messy_model
from .conftest import ball_points, small_nets


def toy_nets() -> dict:
    """Random ReLU nets on 2 inputs, (N, 2): a wide shallow one and a deeper one."""
    torch.manual_seed(3)
    return {"shallow": nn.Sequential(nn.Linear(2, 24), nn.ReLU(), nn.Linear(24, 3)).eval(),
            "deep": nn.Sequential(nn.Linear(2, 12), nn.ReLU(), nn.Linear(12, 12), nn.ReLU(),
                                  nn.Linear(12, 12), nn.ReLU(), nn.Linear(12, 2)).eval()}


def toy_boxes():
    lower = torch.tensor([[-0.5, -0.2], [0.1, 0.3], [-1.0, -1.0]])
    return lower, lower + torch.tensor([[0.6, 0.4], [0.2, 0.5], [2.0, 2.0]])


def grid_range(model, lower, upper, n=301):
    """The min and max of each output over an n x n grid of each 2-D box: (N, K) each."""
    t = torch.linspace(0, 1, n)
    u, v = torch.meshgrid(t, t, indexing="ij")
    lo, up = [], []
    with torch.no_grad():
        for a, b in zip(lower, upper):
            pts = torch.stack([a[0] + (b[0] - a[0]) * u.flatten(), a[1] + (b[1] - a[1]) * v.flatten()], 1)
            z = model(pts)
            lo.append(z.amin(0))
            up.append(z.amax(0))
    return torch.stack(lo), torch.stack(up)


def test_one_partition_is_interval_bound_propagation(digits_mlp, digits_cnn, eight):
    """Xiang et al.'s rule is IBP's: same bounds as `interval` (L-inf, no specification)."""
    x = eight[0][:4]
    for model in (digits_mlp, digits_cnn, *small_nets().values()):
        for eps in (0.0, 0.02, 0.1):
            r, i = reach(model, x, eps=eps), interval(model, x, eps=eps)
            assert torch.equal(r.lower, i.lower) and torch.equal(r.upper, i.upper)


@pytest.mark.parametrize("partitions, dims", [(1, None), (3, 2), (2, 5)])
def test_sound_on_digits(digits_mlp, digits_cnn, eight, partitions, dims):
    x = eight[0][:4]
    for model in (digits_mlp, digits_cnn, small_nets()["maxpool-overlap"]):
        b = reach(model, x, eps=0.05, partitions=partitions, dims=dims)
        with torch.no_grad():
            for p in ball_points(x, 0.05, "linf", 16):
                assert b.contains(model(p)).all()


@pytest.mark.parametrize("name", list(toy_nets()))
def test_nested_partitions_tighten_towards_the_true_range(name):
    """Finer nested partitions (1, 2, 4, ..., 32 pieces a side) never loosen any bound, stay
    sound on a dense grid, and close most of the gap to the grid's range."""
    model, (lower, upper) = toy_nets()[name], toy_boxes()
    true_lo, true_up = grid_range(model, lower, upper)
    prev, gaps = None, []
    for k in (1, 2, 4, 8, 16, 32):
        b = reach_box(model, lower, upper, partitions=k)
        assert (b.lower <= true_lo + 1e-5).all() and (b.upper >= true_up - 1e-5).all()
        if prev is not None:
            assert (b.lower >= prev.lower - 1e-6).all() and (b.upper <= prev.upper + 1e-6).all()
        gaps.append(((true_lo - b.lower) + (b.upper - true_up)).sum().item())
        prev = b
    assert gaps[0] > 0, "the toy boxes should leave IBP loose"
    assert gaps[-1] < 0.1 * gaps[0], f"gap to the true range: {gaps}"


def test_exact_on_affine_nets():
    """An affine layer (after a per-channel one) maps a box exactly: W c + b -+ |W| r."""
    torch.manual_seed(0)
    lin = nn.Linear(2, 3).eval()
    img = nn.Sequential(Normalize([0.3], [0.2]), nn.Flatten(), nn.Linear(64, 5)).eval()
    lower, upper = toy_boxes()
    x = torch.rand(2, 1, 8, 8)
    cases = [(lin, lower, upper, lin.weight), (img, (x - 0.1).clamp(0, 1), (x + 0.1).clamp(0, 1),
                                               img[2].weight / 0.2)]
    for model, lo, up, w in cases:
        with torch.no_grad():
            c = model((lo + up) / 2)
        r = ((up - lo) / 2).flatten(1) @ w.abs().T
        net, u = read_exact(model, lo, up)
        r = r + 2 * rounding_bound(net, lo, up, u)  # widened by twice the rounding bound
        for k in (1, 3):
            b = reach_box(model, lo, up, partitions=k, dims=2)
            torch.testing.assert_close(b.lower, c - r, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(b.upper, c + r, rtol=1e-5, atol=1e-5)


def test_splits_the_entries_that_matter():
    """Splitting the one input the output depends on tightens; splitting the other cannot."""
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1)).eval()
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
        model[0].bias.zero_()
        model[2].weight.copy_(torch.tensor([[1.0, 1.0]]))
        model[2].bias.zero_()  # |x0|: the second input is ignored
    lower, upper = torch.tensor([[-1.0, -1.0]]), torch.tensor([[1.0, 1.0]])
    whole = reach_box(model, lower, upper)
    split = reach_box(model, lower, upper, partitions=2, dims=1)
    torch.testing.assert_close(whole.upper, torch.tensor([[2.0]]))
    torch.testing.assert_close(split.upper, torch.tensor([[1.0]]))  # exact: max |x0| = 1


def test_hygiene(eight):
    x = eight[0][:2]
    model = messy_model()
    b = leaves_as_found(lambda: reach(model, x, eps=0.05, partitions=2, dims=2), model, x)
    with torch.inference_mode():
        torch.testing.assert_close(reach(model, x, eps=0.05, partitions=2, dims=2).lower, b.lower)
    with torch.no_grad():
        for p in ball_points(x, 0.05, "linf", 8):
            assert b.contains(messy_model().eval()(p)).all()


def test_bad_arguments_are_named(digits_mlp, eight):
    x = eight[0][:2]
    lo, up = toy_boxes()
    lin = nn.Linear(2, 3)
    with pytest.raises(TypeError, match="partitions must be an int"):
        reach(digits_mlp, x, eps=0.1, partitions=2.0)
    with pytest.raises(ValueError, match="partitions must be > 0"):
        reach(digits_mlp, x, eps=0.1, partitions=0)
    with pytest.raises(ValueError, match="dims must be an int in"):
        reach(digits_mlp, x, eps=0.1, partitions=2, dims=65)
    with pytest.raises(ValueError, match="exceed max_boxes"):
        reach(digits_mlp, x, eps=0.1, partitions=2)
    with pytest.raises(ValueError, match="eps must be a finite number >= 0"):
        reach(digits_mlp, x, eps=-1.0)
    with pytest.raises(ValueError, match="lower exceeds upper"):
        reach_box(lin, up, lo)
    with pytest.raises(ValueError, match="lower and upper must have one shape"):
        reach_box(lin, lo, up[:2])
    with pytest.raises(ValueError, match="upper contains NaN"):
        reach_box(lin, lo, torch.full_like(up, float("nan")))
    with pytest.raises(TypeError, match="lower must be a float32 or float64 tensor"):
        reach_box(lin, lo.long(), up)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        reach_box(lambda v: v, lo, up)

"""Lp geometry: norms, dual norms, projections, steepest directions, random points in a ball."""

import pytest
import torch

from robustlab.norms import (
    clip_box,
    dual_norm,
    finite_direction,
    flat_norm,
    project,
    random_in_ball,
    steepest,
)

NORMS = ["linf", "l2", "l1"]


def test_flat_norm_matches_torch():
    v = torch.randn(4, 3, 5, 5, dtype=torch.float64)
    for norm, p in [("linf", float("inf")), ("l2", 2), ("l1", 1)]:
        torch.testing.assert_close(flat_norm(v, norm), v.flatten(1).norm(p=p, dim=1))
    assert flat_norm(torch.tensor([[0.0, 2.0, 0.0]]), "l0").item() == 1


@pytest.mark.parametrize("norm", NORMS)
def test_dual_norm_bounds_the_inner_product(norm):
    """Hoelder: <g, d> <= ||g||_* ||d||, with equality for the steepest direction (L-inf, L2)."""
    g = torch.randn(8, 1, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    d = steepest(g, norm, l1_top=1.0)
    inner = (g * d).flatten(1).sum(1)
    bound = flat_norm(g, dual_norm(norm)) * flat_norm(d, norm)
    assert (inner <= bound * (1 + 1e-9)).all()
    if norm != "l1":
        torch.testing.assert_close(inner, bound)
    assert dual_norm(dual_norm(norm)) == norm


@pytest.mark.parametrize("norm", NORMS)
def test_projection_lands_in_the_ball_and_keeps_inside_points(norm):
    gen = torch.Generator().manual_seed(1)
    v = 3 * torch.randn(16, 1, 8, 8, dtype=torch.float64, generator=gen)
    p = project(v, 0.5, norm)
    assert (flat_norm(p, norm) <= 0.5 * (1 + 1e-9)).all()
    inside = v / flat_norm(v, norm).view(-1, 1, 1, 1) * 0.25
    torch.testing.assert_close(project(inside, 0.5, norm), inside)


def test_l2_projection_is_the_nearest_point():
    v = torch.tensor([[3.0, 4.0]])
    torch.testing.assert_close(project(v, 1.0, "l2"), torch.tensor([[0.6, 0.8]]))


def test_clip_box_keeps_x_plus_delta_in_the_unit_box():
    x = torch.tensor([[0.1, 0.9]])
    torch.testing.assert_close(x + clip_box(x, torch.tensor([[-0.5, 0.5]])), torch.tensor([[0.0, 1.0]]))


@pytest.mark.parametrize("norm", NORMS)
def test_random_in_ball(norm):
    x = torch.rand(32, 1, 8, 8)
    d = random_in_ball(x, 0.3, norm, torch.Generator().manual_seed(0))
    assert d.dtype == x.dtype and d.shape == x.shape
    assert (flat_norm(d, norm) <= 0.3 * (1 + 1e-5)).all()
    assert torch.equal(d, random_in_ball(x, 0.3, norm, torch.Generator().manual_seed(0)))


def test_finite_direction():
    g = torch.tensor([[1.0, float("inf"), -float("inf")], [float("nan"), 2.0, -1.0]])
    torch.testing.assert_close(finite_direction(g), torch.tensor([[0.0, 1.0, -1.0], [0.0, 2.0, -1.0]]))
    torch.testing.assert_close(steepest(finite_direction(torch.tensor([[float("inf"), 1.0]])), "l2"),
                               torch.tensor([[1.0, 0.0]]))

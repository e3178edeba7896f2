"""Point clouds: the shapes data, PointNet and DGCNN, the distances and the attacks of
robustlab.attacks.pointcloud, against analytic cases and the constraints on every output."""

import functools

import pytest
import torch

from robustlab._model import correct
from robustlab.attacks import pointcloud as P
from robustlab.pointcloud_data import CLASSES, shapes
from robustlab.pointcloud_models import DGCNN, PointNet, point_accuracy, train_point_model
from robustlab.zoo_beyond import stored_or_trained

from ..conftest import leaves_as_found
from ..syncs import explain, grows

SEED = 0  # the bands below hold for seeds 0, 1 and 2


@functools.cache
def trained(arch: str):
    return stored_or_trained(f"shapes-{arch}", seed=SEED)  # the zoo's for seed 0, else trained


@functools.cache
def clouds(n: int = 24):
    x, y = shapes("test", seed=SEED)
    return x[:n], y[:n]


def small_model(seed: int = 0) -> PointNet:
    torch.manual_seed(seed)
    return PointNet(widths=(16, 32)).eval()


# ---- data and models ----------------------------------------------------------------------

def test_shapes_are_clouds_in_the_unit_ball_of_every_class():
    x, y = shapes("train", n_points=64, n_per_class=6, seed=3)
    assert x.shape == (30, 64, 3) and x.dtype == torch.float32 and y.dtype == torch.long
    assert torch.bincount(y).tolist() == [6] * len(CLASSES)
    radius = x.norm(dim=2).amax(1)
    assert torch.allclose(radius, torch.ones(30), atol=1e-6)  # scaled to touch the unit sphere
    assert x.mean(1).abs().max() < 1e-6  # centred
    a, b = shapes("train", n_points=64, n_per_class=6, seed=3), shapes("test", n_points=64,
                                                                        n_per_class=6, seed=3)
    assert torch.equal(a[0], x) and not torch.equal(b[0], x)


def test_shapes_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        shapes("val")
    with pytest.raises(ValueError, match="n_points"):
        shapes(n_points=0)
    with pytest.raises(TypeError, match="seed"):
        shapes(seed=1.5)


def test_models_classify_the_test_split_and_ignore_the_order_of_points():
    x, y = shapes("test", seed=SEED)
    for arch in ("pointnet", "dgcnn"):
        model = trained(arch)
        assert point_accuracy(model, x, y) >= 0.9, arch
        perm = torch.randperm(x.shape[1], generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            assert torch.allclose(model(x[:8, perm]), model(x[:8]), atol=1e-4), arch


def test_training_is_deterministic_by_seed():
    a, b = (train_point_model("pointnet", seed=5, epochs=1) for _ in range(2))
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    with pytest.raises(ValueError, match="arch"):
        train_point_model("pointnet++")


def test_edgeconv_equals_the_max_over_its_edges():
    """The fused EdgeConv against eq. 7-8 of Wang et al. written out edge by edge."""
    from robustlab.pointcloud_models import EdgeConv, knn

    torch.manual_seed(0)
    conv, h = EdgeConv(4, 6, k=3), torch.randn(2, 9, 4)
    idx = knn(h, 3)
    edges = torch.stack([torch.stack([torch.relu(conv.theta(torch.cat([h[n, i], h[n, j] - h[n, i]])))
                                      for j in idx[n, i]]).amax(0)
                         for n in range(2) for i in range(9)]).view(2, 9, 6)
    assert torch.allclose(conv(h), edges, atol=1e-6)
    assert not (idx == torch.arange(9)[None, :, None]).any()  # a point is not its own neighbour


def test_dgcnn_needs_more_points_than_neighbours():
    with pytest.raises(ValueError, match="more than 10 points"):
        DGCNN()(torch.zeros(1, 10, 3))


# ---- distances ------------------------------------------------------------------------------

def grid() -> torch.Tensor:
    """27 points on a grid of spacing 1: a shift by less than 1/2 keeps each nearest neighbour."""
    r = torch.arange(3.0)
    return torch.cartesian_prod(r, r, r)[None].double()


def test_distances_of_identical_and_shifted_clouds():
    a = grid()
    assert P.chamfer_distance(a, a).item() == 0 and P.hausdorff_distance(a, a).item() == 0
    shift = torch.tensor([0.03, 0.04, 0.0], dtype=torch.double)  # length 0.05
    b = a + shift
    assert P.chamfer_distance(a, b).item() == pytest.approx(0.05, abs=1e-12)
    assert P.chamfer_distance(a, b, squared=True).item() == pytest.approx(0.0025, abs=1e-12)
    assert P.hausdorff_distance(a, b).item() == pytest.approx(0.05, abs=1e-12)


def test_distances_are_symmetric_and_handle_clouds_of_two_sizes():
    a = torch.zeros(1, 1, 3)
    b = torch.tensor([[[0.0, 0, 0], [1, 0, 0]]])
    # a -> b: 0; b -> a: mean(0, 1) = 1/2; Chamfer = (0 + 1/2) / 2; Hausdorff = 1
    for u, v in ((a, b), (b, a)):
        assert P.chamfer_distance(u, v).item() == pytest.approx(0.25)
        assert P.hausdorff_distance(u, v).item() == pytest.approx(1.0)


def test_distance_gradients_are_finite_on_coinciding_points():
    a = grid().requires_grad_(True)
    (g,) = torch.autograd.grad(P.chamfer_distance(a, grid()).sum() + P.hausdorff_distance(a, grid()).sum(), a)
    assert torch.isfinite(g).all()


# ---- attacks ----------------------------------------------------------------------------------

@pytest.mark.parametrize("bound", ["l2", "linf"])
def test_perturb_stays_in_its_bound_and_fools_both_models(bound):
    x, y = clouds()
    eps = 0.2 if bound == "l2" else 0.15
    for arch, band in (("pointnet", 0.6), ("dgcnn", 0.7)):
        model = trained(arch)
        r = leaves_as_found(lambda m=model: P.perturb(m, x, y, eps=eps, steps=10, bound=bound), model, x, y)
        shift = r.adversarial - x
        size = shift.norm(dim=2) if bound == "l2" else shift.abs().amax(2)
        assert size.max() <= eps * (1 + 1e-5) and r.within.all()
        reach = eps if bound == "l2" else eps * 3 ** 0.5
        assert (r.hausdorff <= reach + 1e-6).all() and (r.chamfer <= reach + 1e-6).all()
        assert r.success_rate >= band, (arch, bound, r.success_rate)
        assert "perturb" in r.table()


def test_perturb_is_deterministic_targeted_and_runs_under_no_grad():
    x, y = clouds(8)
    model = trained("pointnet")
    target = (y + 1) % len(CLASSES)
    with torch.no_grad():
        a = P.perturb(model, x, target, eps=0.3, steps=10, targeted=True)
    b = P.perturb(model, x, target, eps=0.3, steps=10, targeted=True)
    assert torch.equal(a.adversarial, b.adversarial)
    hit = model(a.adversarial).argmax(1) == target
    assert torch.equal(hit, a.success) and a.success_rate >= 0.5


def test_chamfer_penalty_keeps_clouds_closer():
    x, y = clouds()
    model = trained("pointnet")
    plain = P.perturb(model, x, y, eps=0.2, steps=10)
    tight = P.perturb(model, x, y, eps=0.2, steps=10, chamfer_weight=20.0)
    assert tight.chamfer.mean() < plain.chamfer.mean() and tight.within.all()


def test_add_points_keeps_the_cloud_and_each_new_point_near_it():
    x, y = clouds()
    model = trained("dgcnn")
    r = leaves_as_found(lambda: P.add_points(model, x, y, n_add=32, eps=0.15, steps=10), model, x, y)
    assert r.adversarial.shape == (len(x), x.shape[1] + 32, 3)
    assert torch.equal(r.adversarial[:, :x.shape[1]], x)
    away = P.hausdorff_distance(r.adversarial, x)  # the original lies inside the new cloud
    assert (away <= 0.15 * (1 + 1e-5)).all() and r.within.all() and r.added == 32
    assert r.success_rate >= 0.4


def test_drop_points_removes_exactly_n_points_by_saliency():
    x, y = clouds()
    for arch in ("pointnet", "dgcnn"):
        model = trained(arch)
        r = leaves_as_found(lambda m=model: P.drop_points(m, x, y, n_drop=60), model, x, y)
        assert r.adversarial.shape == (len(x), x.shape[1] - 60, 3) and r.dropped == 60
        # every kept point is an original point: distance 0 from the adversarial to the original
        kept_to_original = (r.adversarial[:, :, None] - x[:, None]).square().sum(3).amin(2)
        assert kept_to_original.max() == 0
        assert r.success_rate >= 0.35, (arch, r.success_rate)


def test_critical_points_alone_give_pointnet_the_same_logits():
    x, _ = clouds(6)
    model = trained("pointnet")
    mask = P.critical_points(model, x)
    assert mask.shape == x.shape[:2] and (mask.sum(1) < x.shape[1]).all()
    with torch.no_grad():
        for cloud, keep in zip(x, mask):
            assert torch.allclose(model(cloud[keep][None]), model(cloud[None]), atol=1e-6)
    with pytest.raises(TypeError, match="features"):
        P.critical_points(trained("dgcnn"), x)


def test_transfer_from_pointnet_to_dgcnn_is_below_white_box_success():
    x, y = clouds()
    r = P.perturb(trained("pointnet"), x, y, eps=0.2, steps=10)
    rate = P.pointcloud_transfer(r, trained("dgcnn"), y)
    # AdvPC's point (Hamdi et al., ECCV 2020): clouds made on one network fool another less
    assert r.success_rate >= 0.75 and 0 <= rate <= r.success_rate - 0.1


def test_bad_input_is_refused_by_name():
    model, x, y = small_model(), torch.rand(2, 16, 3), torch.tensor([0, 1])
    cases = [(dict(points=torch.rand(2, 16, 2)), ValueError, "points"),
             (dict(points=torch.rand(16, 3)), ValueError, "points"),
             (dict(points=x.clone().index_put_((torch.tensor([0]),), torch.tensor(float("nan")))),
              ValueError, "NaN"),
             (dict(eps=-0.1), ValueError, "eps"), (dict(bound="l1"), ValueError, "bound"),
             (dict(y=torch.tensor([0, 1, 2])), ValueError, "y")]
    for change, error, word in cases:
        kw = dict(points=x, y=y, eps=0.1, steps=2) | change
        with pytest.raises(error, match=word):
            P.perturb(model, kw.pop("points"), kw.pop("y"), **kw)
    with pytest.raises(ValueError, match="n_drop"):
        P.drop_points(model, x, y, n_drop=16)
    with pytest.raises(ValueError, match="n_add"):
        P.add_points(model, x, y, n_add=0, eps=0.1)
    with pytest.raises(ValueError, match="a and b"):
        P.chamfer_distance(x, x[:1])


def test_host_syncs_do_not_grow_with_steps_or_rounds():
    model, x, y = small_model(), torch.rand(2, 16, 3), torch.tensor([0, 1])
    for run in (lambda n: P.perturb(model, x, y, eps=0.1, steps=n),
                lambda n: P.add_points(model, x, y, n_add=2, eps=0.1, steps=n),
                lambda n: P.drop_points(model, x, y, n_drop=6, rounds=n)):
        a, b = grows(run, 2, 6)
        assert a.total == b.total, explain(a, b)


def test_saliency_dropping_beats_dropping_at_random():
    x, y = clouds()
    model = trained("pointnet")
    g = torch.Generator().manual_seed(0)
    keep = torch.stack([torch.randperm(x.shape[1], generator=g)[:x.shape[1] - 60] for _ in x])
    clean = correct(model, x, y)
    fooled = clean & ~correct(model, x.gather(1, keep[..., None].expand(-1, -1, 3)), y)
    at_random = fooled.sum().item() / clean.sum().item()
    assert P.drop_points(model, x, y, n_drop=60).success_rate >= at_random + 0.3, at_random


def test_every_attack_leaves_a_training_model_and_its_input_as_found():
    model, x, y = small_model().train(), torch.rand(3, 20, 3) * 2 - 1, torch.tensor([0, 1, 2])
    for attack in (lambda: P.perturb(model, x, y, eps=0.1, steps=2),
                   lambda: P.add_points(model, x, y, n_add=3, eps=0.1, steps=2),
                   lambda: P.drop_points(model, x, y, n_drop=4, rounds=2),
                   lambda: P.critical_points(model, x)):
        leaves_as_found(attack, model, x, y)
    assert model.training

"""ATLD, robustlab.defences.latent: the latent-distribution discriminator game."""

import math

import pytest
import torch
from torch import nn

from robustlab import data, models, seed_everything
from robustlab.defences import latent_at, latent_discriminator
from robustlab.defences.latent import discriminator_loss, lmae, perturbed_log_odds
from robustlab.norms import clip_box, random_in_ball
from robustlab.train import fit

from ..conftest import assert_unchanged, leaves_as_found, linear_classifier, messy_model, seeded, snapshot
from .conftest import pgd_accuracy, standard_pgd_accuracy


def test_lmae_step_on_a_linear_model_and_discriminator():
    """z = W x + b and D's column 0 s = u.z + c: grad_x log(1 - sigmoid(s)) = -sigmoid(s) W^T u,
    so one signed step of size eps from x is x - eps sign(W^T u), clipped to [0, 1]; it makes
    every example look at least as perturbed to D."""
    x, _ = data.digits("test")
    x = x[:12].double()
    model = linear_classifier(k=3).double()
    torch.manual_seed(1)
    disc = nn.Linear(3, 4).double()
    x_adv = lmae(model, disc, x, eps=0.1, alpha=0.1, steps=1, random_start=False)
    u = disc.weight[0].detach()
    w = model[1].weight.detach()
    expected = (x - 0.1 * torch.sign(u @ w).reshape(1, 1, 8, 8)).clamp(0, 1)
    assert torch.equal(x_adv, expected)
    with torch.no_grad():
        before = perturbed_log_odds(disc, model(x))
        after = perturbed_log_odds(disc, model(x_adv))
    assert (after >= before).all() and (after > before).float().mean() > 0.9


def test_discriminator_loss_at_chance():
    """A discriminator that outputs zeros is at chance: the GAN value is -2 log 2 and each
    class head's cross-entropy is log K."""
    disc = nn.Linear(3, 4)
    nn.init.zeros_(disc.weight)
    nn.init.zeros_(disc.bias)
    z = torch.randn(10, 3)
    y = torch.randint(0, 3, (10,))
    loss, logs = discriminator_loss(disc, z, z + 1, y)
    assert math.isclose(logs["divergence"].item(), -2 * math.log(2), rel_tol=1e-6)
    assert math.isclose(loss.item(), 2 * math.log(2) + 2 * math.log(3), rel_tol=1e-6)
    assert logs["d_acc"].item() == 0.0  # ties are counted wrong on both sides


def test_the_discriminator_learns_to_separate_and_the_lmae_climb_its_estimate():
    """The classifier held fixed (lr = 0), D plays alone: over the epochs its accuracy on
    natural against perturbed latents rises from near chance to well above it, and so does its
    divergence estimate; on held-out digits it still tells the two apart, and the LMAE look
    more perturbed to it than random points of the same ball do (measured, seeds 0-2: d_acc
    0.65-0.67 in the first epoch, 0.87-0.90 in the last; held out 0.84-0.88; mean
    log(1 - D) -0.2 to -0.4 at the LMAE, -2.3 to -3.3 at random points)."""
    train, (x, y) = data.digits("train"), data.digits("test")
    seed_everything(0)
    model = models.MLP((1, 8, 8), (32,), 10)
    fit(model, train, epochs=3, lr=3e-3, progress=False)
    weights = [p.detach().clone() for p in model.parameters()]
    disc = latent_discriminator(10)
    hist = latent_at(model, (train[0][:600], train[1][:600]), eps=0.1, alpha=0.1, epochs=8,
                     d_lr=5e-3, discriminator=disc, optimizer=torch.optim.SGD(model.parameters(), lr=0.0),
                     progress=False, generator=seeded())
    assert hist[0]["d_acc"] < 0.72 and hist[-1]["d_acc"] > 0.8
    assert hist[-1]["divergence"] > hist[0]["divergence"] + 0.4
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters()))  # only D moved
    x_adv = lmae(model, disc, x, eps=0.1, alpha=0.1, generator=seeded(1))
    x_rand = x + clip_box(x, random_in_ball(x, 0.1, "linf", seeded(1)))
    with torch.no_grad():
        _, logs = discriminator_loss(disc, model(x), model(x_adv), y)
        assert logs["d_acc"] > 0.75
        assert (perturbed_log_odds(disc, model(x_adv)).mean()
                > perturbed_log_odds(disc, model(x_rand)).mean() + 1.0)


@pytest.mark.parametrize("seed", [0, 1])
def test_more_robust_than_standard_training(seed):
    """PGD (cross-entropy) accuracy at eps = 0.1 on the digits after ATLD at eps = 0.1
    (measured, seeds 0 and 1: standard 0.50-0.52; ATLD 0.61-0.64). Much of the gain is the
    label smoothing ATLD trains with (standard training with smoothing 0.5 alone: 0.57-0.62),
    and PGD on the margin loss finds most of it gone (ATLD 0.53-0.56 against smoothing alone
    0.50-0.51): at this scale the game adds little robustness of its own."""
    train, (x, y) = data.digits("train"), data.digits("test")
    seed_everything(seed)
    model = models.MLP((1, 8, 8), (64,), 10)
    hist = latent_at(model, train, eps=0.1, alpha=0.1, epochs=10, lr=3e-3, progress=False,
                     generator=seeded(seed), eval_data=(x, y))
    assert hist[-1]["test_acc"] > 0.9 and hist[-1]["d_acc"] > 0.6
    assert pgd_accuracy(model, x, y) > standard_pgd_accuracy(seed) + 0.05


def test_hygiene():
    """Flags, frozen weights and the data come back as found; the model ends in eval mode like
    fit leaves it; batch norm trains; `lmae` leaves the model and D exactly as found."""
    x, y = data.digits("test")
    x, y = x[:32], y[:32]
    x0 = x.clone()
    model = messy_model()
    frozen = model[0].weight.detach().clone()
    flags = [p.requires_grad for p in model.parameters()]
    tracked = int(model[1].num_batches_tracked)
    latent_at(model, [(x, y)], eps=0.1, alpha=0.05, steps=2, epochs=2, lr=1e-3, progress=False)
    assert torch.equal(x, x0)
    assert flags == [p.requires_grad for p in model.parameters()]
    assert torch.equal(model[0].weight, frozen)
    assert not any(m.training for m in model.modules())
    assert int(model[1].num_batches_tracked) > tracked

    model = messy_model()
    disc = latent_discriminator(10)
    disc.train()
    for p in disc.parameters():
        p.grad = torch.randn_like(p)
    d_before = snapshot(disc)
    leaves_as_found(lambda: lmae(model, disc, x, eps=0.1, alpha=0.05, steps=2,
                                 attack_mode="train"), model, x)
    assert_unchanged(disc, d_before)


@pytest.mark.parametrize("kwargs, arg", [
    (dict(eps=-0.1), "eps"), (dict(alpha=0.0), "alpha"), (dict(steps=0), "steps"),
    (dict(epochs=0), "epochs"), (dict(beta=-1.0), "beta"), (dict(smoothing=1.0), "smoothing"),
    (dict(d_lr=0.0), "d_lr"), (dict(d_steps=0), "d_steps"), (dict(norm="l1"), "norm"),
    (dict(attack_mode="test"), "attack_mode"), (dict(generator=1), "generator"),
    (dict(discriminator="D"), "discriminator"), (dict(d_optimizer="adam"), "d_optimizer"),
    (dict(d_optimizer=torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)),
     "discriminator"),
])
def test_bad_arguments_name_the_argument(kwargs, arg):
    x, y = data.digits("test")
    args = dict(eps=0.1, alpha=0.05, epochs=1) | kwargs
    with pytest.raises((ValueError, TypeError), match=arg):
        latent_at(models.MLP(), [(x[:8], y[:8])], **args)
    with pytest.raises(ValueError, match="num_classes"):
        latent_discriminator(0)

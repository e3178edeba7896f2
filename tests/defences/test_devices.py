"""Every public defence on each device (`device` fixture): transforms, detectors, objectives,
training loops (one short epoch), regularisers, smoothing and the distributed helpers. The
result (outputs, or the trained weights) lies on the input's device, is identical twice with a
seed on the CPU, and equals the CPU's on CUDA within each case's tolerance.

A training case trains a small MLP for one epoch of two batches of 16 digits: the weights
after it differ from the CPU's by float32 rounding, amplified a little by the attack's signs.
"""

import functools

import pytest
import torch
import torch.distributed as dist

from robustlab import data, models
from robustlab import defences as D
from robustlab.defences import smoothing
from robustlab.tokens import TokenCNN, token_task
from robustlab.train import fit

from ..conftest import seeded
from ..devices import Case, check_case

TRAINED = dict(atol=1e-4, frac=0.02)  # weights after one short adversarial epoch


@functools.cache
def _digits():
    x, y = data.digits("test")
    return x[:32].clone(), y[:32].clone()


def digits(device, n=32):
    x, y = _digits()
    return x[:n].to(device), y[:n].to(device)


def mlp(device):
    torch.manual_seed(0)
    return models.MLP((1, 8, 8), (16,), 10).to(device)


def train(objective):
    """A case: one epoch of `objective` on 32 digits in batches of 16; the trained weights."""
    def run(device):
        model = mlp(device)
        fit(model, digits(device), epochs=1, batch_size=16, objective=objective(), lr=1e-2,
            progress=False, device=device)
        return model
    return Case(run, **TRAINED)


def loop(method, epochs=1, draws=False, **kw):
    """A case: a training loop on two batches of 16 digits; the trained weights. With `draws`,
    each run gets a fresh seeded generator (a shared one would go on where the last run ended)."""
    def run(device):
        model = mlp(device)
        x, y = digits(device)
        more = {"generator": seeded()} if draws else {}
        method(model, [(x[:16], y[:16]), (x[16:], y[16:])], epochs=epochs, progress=False,
               **kw, **more)
        return model
    return Case(run, **TRAINED)


def transform(fn, **case):
    return Case(lambda d: fn(digits(d, 4)[0]), **case)


def _freelb(device):
    torch.manual_seed(0)
    model = TokenCNN(vocab=20, dim=8).to(device)
    ids, y = token_task(16, vocab=20, seed=3)
    D.freelb(model, [(ids.to(device), y.to(device))], eps=0.5, alpha=0.2, steps=2, epochs=1,
             progress=False, generator=seeded())
    return model


def _latent(device):
    model = mlp(device)
    torch.manual_seed(1)
    disc = D.latent_discriminator(10).to(device)
    D.latent_at(model, digits(device), eps=0.1, alpha=0.1, epochs=1, discriminator=disc,
                progress=False, generator=seeded())
    return model, disc


def _best_robust(device):
    model = mlp(device)
    stopper = D.BestRobust(digits("cpu", 8), eps=0.1, alpha=0.03, steps=2)
    fit(model, digits(device), epochs=2, batch_size=16, lr=0.05, progress=False, device=device,
        after_epoch=stopper)
    return stopper.best_acc, stopper.restore(model), model


def _lipschitz(device):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), D.BjorckLinear(64, 16), D.GroupSort(2),
                                torch.nn.Linear(16, 10)).to(device)
    normed = D.spectral_normalised(model)
    x = digits(device, 4)[0]
    return (model(x), normed(x), D.bjorck(model[3].weight), D.spectral_norms(model),
            D.weight_correlation_penalty(model))


def _parseval(device):
    model = mlp(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    handle = D.parseval(opt, model, beta=0.1)
    x, y = digits(device, 16)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    handle.remove()
    D.parseval_retraction(model, beta=0.1)
    return model


def _cyclic(device):
    model = mlp(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = D.cyclic_lr(opt, epochs=2, max_lr=0.2)
    fit(model, digits(device), epochs=2, batch_size=16, optimizer=opt, scheduler=sched,
        progress=False, device=device)
    return model, opt.param_groups[0]["lr"]


def _squeeze(device):
    model = mlp(device)
    x = digits(device, 16)[0]
    detector = D.calibrate_squeezing(model, x, squeezers=D.default_squeezers())
    return (detector(x), detector.threshold, D.squeeze_score(model, x),
            D.SqueezeDetector(model, D.default_squeezers(), detector.threshold, 0.05)(x))


def _ddp(device, tmp_path):
    """One rank in this process: gloo on the CPU, NCCL on the GPU (choose_backend's rule)."""
    backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    try:
        model = mlp("cpu")
        x, y = digits("cpu")
        D.ddp_fit(model, x, y, epochs=1, batch_size=16, progress=False,
                  objective=D.pgd_at(eps=0.1, alpha=0.05, steps=2, generator=seeded()),
                  checkpoint=tmp_path / "run.pt")
        return model, [yb for _, yb in D.shard_batches(x, y, batch_size=16)]
    finally:
        dist.destroy_process_group()
        (tmp_path / "store").unlink(missing_ok=True)
        (tmp_path / "run.pt").unlink(missing_ok=True)


def _distil(device):
    teacher, student = mlp(device), mlp(device)
    D.distillation(teacher, student, digits(device), temperature=20.0, epochs=1, batch_size=16,
                   lr=1e-2, progress=False, device=device)
    return teacher, student, D.soft_labels(teacher, digits(device, 4)[0], temperature=20.0)


def _orthogonal(device):
    torch.manual_seed(0)
    model = torch.nn.Sequential(D.OrthogonalConv2d(1, 4, 3), D.GroupSort(2), torch.nn.Flatten(),
                                D.BjorckLinear(256, 10)).to(device)
    x = digits(device, 4)[0]
    return model(x), D.gnp_radius(model, x)


def _radii(device):
    p = torch.tensor([0.3, 0.6, 0.9, 0.999], device=device)
    return (D.cohen_radius(p, sigma=0.5), D.lecuyer_radius(p, sigma=0.5),
            D.laplace_radius(p, scale=0.5))


CASES = {
    "Defended": transform(lambda x: D.Defended(mlp(x.device), D.median_filter)(x)),
    "RandomResizePad": transform(lambda x: D.RandomResizePad(generator=seeded())(x)),
    "bit_depth": transform(lambda x: D.bit_depth(x, 3)),
    "jpeg": transform(lambda x: D.jpeg(x, 60), atol=1 / 255 + 1e-6),
    "jpeg_approx": transform(lambda x: D.jpeg_approx(x, 60), atol=1e-5),
    "median_filter": transform(lambda x: D.median_filter(x, 3)),
    "total_variation": transform(D.total_variation, atol=1e-4),
    "tv_denoise": transform(lambda x: D.tv_denoise(x, steps=5), atol=1e-4),
    "random_shift": transform(lambda x: D.random_shift(x, generator=seeded())),
    "laplace_noise": train(lambda: D.laplace_noise(scale=0.2, generator=seeded())),
    "gaussian_noise": train(lambda: D.gaussian_noise(sigma=0.2, generator=seeded())),
    "SqueezeDetector": Case(_squeeze, atol=1e-4),
    "calibrate_squeezing": Case(_squeeze, atol=1e-4),
    "default_squeezers": Case(_squeeze, atol=1e-4),
    "squeeze_score": Case(_squeeze, atol=1e-4),
    "fgsm_at": train(lambda: D.fgsm_at(eps=0.1)),
    "fast_at": train(lambda: D.fast_at(eps=0.1, generator=seeded())),
    "pgd_at": train(lambda: D.pgd_at(eps=0.1, alpha=0.05, steps=2, generator=seeded())),
    "trades": train(lambda: D.trades(eps=0.1, alpha=0.05, steps=2, generator=seeded())),
    "vat": train(lambda: D.vat(eps=0.5, generator=seeded())),
    "vat_direction": Case(lambda d: D.vat_direction(mlp(d), digits(d, 4)[0], generator=seeded()),
                          atol=1e-4),
    "wrm": train(lambda: D.wrm(steps=2)),
    "wrm_surrogate": Case(lambda d: D.wrm_surrogate(mlp(d), *digits(d, 8), gamma=2.0, steps=3),
                          atol=1e-4),
    "deepfool_at": train(lambda: D.deepfool_at(steps=3)),
    "smooth_adv": train(lambda: D.smooth_adv(sigma=0.25, eps=0.5, steps=2, samples=2,
                                             generator=seeded())),
    "augmented": train(lambda: D.augmented(generator=seeded())),
    "weight_correlation": train(lambda: D.weight_correlation(weight=0.1)),
    "weight_correlation_penalty": Case(_lipschitz, atol=1e-4),
    "awp": loop(D.awp, eps=0.1, alpha=0.05, steps=2, draws=True),
    "free_at": loop(D.free_at, epochs=2, eps=0.1, replays=2),
    "yopo": loop(D.yopo, eps=0.1, alpha=0.03, m=2, n=2, draws=True),
    "freelb": Case(_freelb, **TRAINED),
    "latent_at": Case(_latent, **TRAINED),
    "latent_discriminator": Case(_latent, **TRAINED),
    "BestRobust": Case(_best_robust, **TRAINED),
    "BjorckLinear": Case(_lipschitz, atol=1e-4),
    "GroupSort": Case(_lipschitz, atol=1e-4),
    "bjorck": Case(_lipschitz, atol=1e-4),
    "spectral_normalised": Case(_lipschitz, atol=1e-4),
    "spectral_norms": Case(_lipschitz, atol=1e-4),
    "parseval": Case(_parseval, atol=1e-5),
    "parseval_retraction": Case(_parseval, atol=1e-5),
    "cyclic_lr": Case(_cyclic, atol=1e-5),
    "certified_accuracy": Case(lambda d: D.certified_accuracy(
        mlp(d), *digits(d, 4), sigma=0.25, radii=[0.0, 0.1], n0=8, n=32, batch_size=16,
        generator=seeded())),
    "distillation": Case(_distil, **TRAINED),
    "soft_labels": Case(_distil, **TRAINED),
    "OrthogonalConv2d": Case(_orthogonal, atol=1e-4),
    "gnp_radius": Case(_orthogonal, atol=1e-4),
    "laplace_certify": Case(lambda d: D.laplace_certify(mlp(d), digits(d, 4)[0], scale=0.25,
                                                        n0=8, n=32, generator=seeded())),
    "cohen_radius": Case(_radii, atol=1e-9),
    "lecuyer_radius": Case(_radii, atol=1e-9),
    "laplace_radius": Case(_radii, atol=1e-9),
    "smoothing.predict": Case(lambda d: smoothing.predict(mlp(d), digits(d, 4)[0], sigma=0.25,
                                                          n=32, generator=seeded())),
    "smoothing.certify": Case(lambda d: smoothing.certify(mlp(d), digits(d, 4)[0], sigma=0.25,
                                                          n0=8, n=32, generator=seeded())),
}

# one process group per test: it needs a store file of its own
DDP = ["ddp_fit", "shard_batches"]
NOT_ON_A_DEVICE = {
    "Transform": "a type alias (Callable[[Tensor], Tensor]), nothing to run",
    "launch": "spawns processes; the backend and device it picks are tested by "
              "tests/defences/test_distributed.py (choose_backend, rank_device, two ranks)",
}
COVERED = set(CASES) | set(DDP)


@pytest.mark.parametrize("name", sorted(CASES))
def test_defence_on_device(name, device):
    check_case(CASES[name], device)


@pytest.mark.parametrize("name", DDP)
def test_ddp_fit_on_device(name, device, tmp_path):
    """ddp_fit on one rank: the model trains on the backend's device (CUDA under NCCL)."""
    check_case(Case(lambda d: _ddp(d, tmp_path), **TRAINED), device)



# federated adversarial training (defences/federated.py): the split, two rounds of FedAvg with
# PGD-AT on two clients, and the per-round accuracies; one run covers all four names
def _federated(device):
    x, y = digits(device)
    parts = D.dirichlet_split(y, clients=2, alpha=1.0, generator=seeded())
    model = mlp(device)
    history = D.federated_fit(
        model, [(x[p], y[p]) for p in parts], rounds=2, local_epochs=1, lr=1e-2, batch_size=16,
        objective=D.pgd_at(eps=0.1, alpha=0.05, steps=2, generator=seeded()), generator=seeded(),
        evaluate=D.clean_and_robust(x, y))
    return model, parts, history.rows


FEDERATED = ["FederatedHistory", "clean_and_robust", "dirichlet_split", "federated_fit"]
COVERED |= set(FEDERATED)


def test_federated_on_device(device):
    """(The CASES test is parametrised before this block: the federated case runs here.)"""
    check_case(Case(_federated, **TRAINED), device)


# robust self-training (defences/semi.py): a teacher for one epoch, its pseudo-labels on 16
# digits, one epoch of PGD-AT on the 32 + 16; one run covers all three names
def _self_training(device):
    x, y = digits(device)
    model = mlp(device)
    run = D.robust_self_training(
        model, (x[:16], y[:16]), x[16:], objective=D.pgd_at(eps=0.1, alpha=0.05, steps=2,
                                                           generator=seeded()),
        epochs=1, teacher_epochs=1, lr=1e-2, batch_size=16, device=device)
    return model, run.labels, D.pseudo_labels(run.teacher, x)


SEMI = ["SelfTraining", "pseudo_labels", "robust_self_training"]
COVERED |= set(SEMI)


def test_self_training_on_device(device):
    """(The CASES test is parametrised before this block: the self-training case runs here.)"""
    check_case(Case(_self_training, **TRAINED), device)

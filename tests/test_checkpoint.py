"""fit(checkpoint=, resume=): atomic per-epoch checkpoints, checked on load, resuming exactly."""

import copy
import json
import random
from functools import partial

import numpy as np
import pytest
import torch
from torch.optim.lr_scheduler import ExponentialLR

from robustlab import checkpoint as ckpt
from robustlab import data, models, seed_everything
from robustlab.train import cross_entropy, fit

from .test_train import same_state


@pytest.fixture(scope="module")
def digits():
    x, y = data.digits("test")
    return (x[:96], y[:96]), (x[96:160], y[96:160])


def noisy(model, x, y):
    """Draws from torch's, NumPy's and Python's global RNGs, so resuming must restore all three."""
    scale = 0.1 * float(np.random.rand()) * random.random()
    loss = cross_entropy(model, (x + scale * torch.randn_like(x)).clamp(0, 1), y)
    return loss, {"scale": scale}


def run(train, test, epochs, **kw):
    """A fresh seeded run: every call builds the same model, optimizer and scheduler."""
    seed_everything(3)
    model = models.MLP((1, 8, 8), (16,), 10)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    hist = fit(model, train, epochs=epochs, objective=noisy, optimizer=opt, scheduler=sched,
               batch_size=32, eval_data=test, seed=5, progress=False, device="cpu", **kw)
    return model, hist


def same(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(),
                                                 b.state_dict().values()))


def test_resume_equals_uninterrupted_run(digits, tmp_path):
    train, test = digits
    straight, h_straight = run(train, test, 3)
    path = tmp_path / "run.pt"
    _, h_two = run(train, test, 2, checkpoint=path)
    assert len(h_two) == 2 and h_two == h_straight[:2]
    random.random(), np.random.rand(), torch.rand(3)  # disturb every RNG before resuming
    resumed, h_resumed = run(train, test, 3, checkpoint=path, resume=True)
    assert same(resumed, straight)
    assert h_resumed == h_straight
    assert ckpt.load(path)["epoch"] == 3
    # every epoch saved, with no temporary file left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.pt", "run.pt.sha256.json"]


def test_checkpoint_loads_with_weights_only(digits, tmp_path):
    path = tmp_path / "run.pt"
    model, hist = run(*digits, 1, checkpoint=path)
    state = torch.load(path, weights_only=True)
    assert state["epoch"] == 1 and state["history"] == hist
    assert set(state) >= {"model", "optimizer", "scheduler", "classes", "rng", "history", "epoch"}
    assert state["classes"] == {"optimizer": "torch.optim.adam.Adam",
                                "scheduler": "torch.optim.lr_scheduler.StepLR"}
    assert set(state["rng"]) == {"torch", "cuda", "numpy", "python", "loader", "objective"}
    record = json.loads(ckpt.sidecar_path(path).read_text())
    assert record["file"] == "run.pt" and record["sha256"] == models.sha256(path.read_bytes())


def test_resume_without_checkpoint_starts_from_scratch(digits, tmp_path):
    train, test = digits
    straight, h_straight = run(train, test, 2)
    resumed, h_resumed = run(train, test, 2, checkpoint=tmp_path / "new.pt", resume=True)
    assert same(resumed, straight) and h_resumed == h_straight
    assert (tmp_path / "new.pt").exists()


def test_crash_while_saving_keeps_previous_checkpoint(digits, tmp_path, monkeypatch):
    path = tmp_path / "run.pt"
    run(*digits, 1, checkpoint=path)
    before = path.read_bytes(), ckpt.sidecar_path(path).read_text()
    real_save = torch.save

    def crash(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        run(*digits, 2, checkpoint=path, resume=True)
    monkeypatch.setattr(torch, "save", real_save)
    assert (path.read_bytes(), ckpt.sidecar_path(path).read_text()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.pt", "run.pt.sha256.json"]
    assert ckpt.load(path)["epoch"] == 1


def test_crash_between_sidecar_and_rename_is_finished_on_load(digits, tmp_path, monkeypatch):
    path = tmp_path / "run.pt"
    run(*digits, 1, checkpoint=path)
    real_replace = ckpt.os.replace

    def crash(src, dst):
        if str(dst) == str(path):
            raise KeyboardInterrupt  # killed after the sidecar was committed
        real_replace(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        run(*digits, 2, checkpoint=path, resume=True)
    monkeypatch.setattr(ckpt.os, "replace", real_replace)
    assert ckpt.load(path)["epoch"] == 2  # the pending file matched the sidecar: committed
    assert not (tmp_path / "run.pt.tmp").exists()


def test_tampered_checkpoint_is_refused(digits, tmp_path):
    path = tmp_path / "run.pt"
    run(*digits, 1, checkpoint=path)
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match=r"run\.pt fails its sha256 check"):
        run(*digits, 2, checkpoint=path, resume=True)
    ckpt.sidecar_path(path).unlink()
    with pytest.raises(FileNotFoundError, match=r"run\.pt has no checksum file"):
        run(*digits, 2, checkpoint=path, resume=True)


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_checkpoint_with_pickled_object_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": ckpt.FORMAT, "epoch": 1, "extra": Payload()}, path)
    ckpt.sidecar_path(path).write_text(json.dumps({"sha256": models.sha256(path.read_bytes())}))
    with pytest.raises(ValueError, match=r"evil\.pt does not load with weights_only=True"):
        ckpt.load(path)


def test_state_that_would_not_load_is_refused_when_saving(tmp_path):
    path = tmp_path / "run.pt"
    ckpt.save(path, {"format": ckpt.FORMAT, "epoch": 1})
    before = path.read_bytes()
    with pytest.raises(ValueError, match=r"run\.pt: the state holds more than tensors"):
        ckpt.save(path, {"format": ckpt.FORMAT, "epoch": 2, "scheduler": {"hook": Payload()}})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.pt", "run.pt.sha256.json"]


def test_checkpoint_of_another_model_is_refused(digits, tmp_path):
    path = tmp_path / "run.pt"
    run(*digits, 1, checkpoint=path)
    other = models.MLP((1, 8, 8), (24,), 10)
    with pytest.raises(ValueError, match=r"resume: checkpoint .*run\.pt is from another model"
                                         r".*1\.weight: \(16, 64\) in the checkpoint"):
        fit(other, digits[0], epochs=2, checkpoint=path, resume=True, progress=False)
    with pytest.raises(ValueError, match="checkpoint .* has scheduler state.*scheduler=None"):
        fit(models.MLP((1, 8, 8), (16,), 10), digits[0], epochs=2, checkpoint=path,
            resume=True, progress=False)


def test_bad_checkpoint_arguments(digits, tmp_path):
    train = digits[0]
    with pytest.raises(ValueError, match="resume=True needs checkpoint"):
        fit(models.MLP(), train, epochs=1, resume=True, progress=False)
    with pytest.raises(TypeError, match="checkpoint must be a path"):
        fit(models.MLP(), train, epochs=1, checkpoint=3, progress=False)
    with pytest.raises(TypeError, match="resume must be a path"):
        fit(models.MLP(), train, epochs=1, checkpoint=tmp_path / "a.pt", resume=1,
            progress=False)
    with pytest.raises(ValueError, match="checkpoint must be a file"):
        fit(models.MLP(), train, epochs=1, checkpoint=tmp_path, progress=False)
    with pytest.raises(ValueError, match="checkpoint's folder .* does not exist"):
        fit(models.MLP(), train, epochs=1, checkpoint=tmp_path / "no" / "a.pt", progress=False)
    with pytest.raises(FileNotFoundError, match="resume: no checkpoint at"):
        fit(models.MLP(), train, epochs=1, resume=tmp_path / "missing.pt", progress=False)
    path = tmp_path / "run.pt"
    run(*digits, 2, checkpoint=path)
    with pytest.raises(ValueError, match="epochs=1 is fewer than the 2 epochs already done"):
        run(*digits, 1, checkpoint=path, resume=True)


def step_lr(opt):
    return torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)


def resume_refused(path, digits, optimizer_class, match, *, scheduler=step_lr, objective=noisy):
    """Resume from `path` with a fresh model and an optimizer of `optimizer_class`; check it
    raises a ValueError matching `match` and leaves the model, the optimizer, the scheduler and
    torch's RNG exactly as they were."""
    seed_everything(4)
    model = models.MLP((1, 8, 8), (16,), 10)
    opt = optimizer_class(model.parameters(), lr=1e-2)
    sched = scheduler(opt) if scheduler else None
    train, test = digits
    before = (copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict()),
              torch.get_rng_state())
    with pytest.raises(ValueError, match=match):
        fit(model, train, epochs=3, objective=objective, optimizer=opt, scheduler=sched,
            batch_size=32, eval_data=test, seed=5, progress=False, device="cpu",
            checkpoint=path, resume=True)
    assert same_state(model.state_dict(), before[0]), "the failed resume loaded the model"
    assert same_state(opt.state_dict(), before[1]), "the failed resume loaded the optimizer"
    assert torch.equal(torch.get_rng_state(), before[2]), "the failed resume set the RNG"


# issue 15: an Adam checkpoint resumed with SGD loaded silently, then crashed with
# KeyError: 'momentum' (the reverse with 'betas'); a failing resume had already loaded the model
def test_resume_with_another_optimizer_is_refused_before_loading(digits, tmp_path):
    adam = tmp_path / "adam.pt"
    run(*digits, 1, checkpoint=adam)  # Adam
    resume_refused(adam, digits, torch.optim.SGD, r"resume: .*adam\.pt.* optimizer .*Adam.* "
                                          r"optimizer=.*SGD")
    sgd = tmp_path / "sgd.pt"
    seed_everything(3)
    model = models.MLP((1, 8, 8), (16,), 10)
    opt = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    fit(model, digits[0], epochs=1, objective=noisy, optimizer=opt, progress=False,
        device="cpu", checkpoint=sgd,
        scheduler=step_lr(opt))
    resume_refused(sgd, digits, torch.optim.Adam, r"optimizer .*SGD.* optimizer=.*Adam")
    # a checkpoint that did not record the optimizer's class: told apart by its options
    state = ckpt.load(adam)
    del state["classes"]
    ckpt.save(adam, state)
    resume_refused(adam, digits, torch.optim.SGD, r"options \['amsgrad', 'betas'.* "
                                                  r"optimizer=SGD does not have")


def test_failing_resume_leaves_model_optimizer_and_rng_as_found(digits, tmp_path):
    saved = tmp_path / "run.pt"
    run(*digits, 1, checkpoint=saved)
    draws = torch.Generator().manual_seed(0)

    def drawing(model, x, y):  # closes over a generator the checkpoint did not save
        noise = 0.01 * torch.rand(x.shape, generator=draws)
        return cross_entropy(model, (x + noise).clamp(0, 1), y)

    resume_refused(saved, digits, torch.optim.Adam, "objective draws from 1 torch generator",
                   objective=drawing)
    resume_refused(saved, digits, torch.optim.Adam, "has scheduler state", scheduler=None)
    resume_refused(saved, digits, torch.optim.Adam, r"with the scheduler .*StepLR.*"
                   r"scheduler=.*ExponentialLR", scheduler=partial(ExponentialLR, gamma=0.5))


# issue 15: refusals repeated torch's advice that weights_only=False "will likely succeed"
def test_refusals_never_advise_weights_only_false(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": ckpt.FORMAT, "epoch": 1, "extra": Payload()}, path)
    ckpt.sidecar_path(path).write_text(json.dumps({"sha256": models.sha256(path.read_bytes())}))
    with pytest.raises(ValueError) as refused_load:
        ckpt.load(path)
    with pytest.raises(ValueError) as refused_save:
        ckpt.save(tmp_path / "run.pt", {"format": ckpt.FORMAT, "scheduler": {"hook": Payload()}})
    for refused in (refused_load, refused_save):
        message = str(refused.value)
        assert "False" not in message and "likely succeed" not in message
        assert "trust" not in message and "safe_globals" not in message
        assert "print" in message  # what weights_only refused is still named

"""Durability of fit(checkpoint=, resume=): a run killed with SIGKILL mid-epoch resumes to the
weights of an uninterrupted run, with every RNG restored, the objective's generator included."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from robustlab import checkpoint as ckpt
from robustlab import data, models, seed_everything
from robustlab.defences import pgd_at
from robustlab.train import fit

SCRIPT = """
import sys, time
import torch
from robustlab import data, models, seed_everything
from robustlab.defences import pgd_at
from robustlab.train import fit

torch.set_num_threads(1)
path, out, pause = sys.argv[1], sys.argv[2], float(sys.argv[3])
seed_everything(0)
x, y = data.digits("train")
model = models.MLP((1, 8, 8), (32,), 10, dropout=0.2)  # dropout: the global torch RNG
inner = pgd_at(eps=0.1, alpha=0.04, steps=3, generator=torch.Generator().manual_seed(1))

def objective(m, xb, yb):
    time.sleep(pause)  # slow steps, so the kill lands inside an epoch
    return inner(m, xb, yb)

opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)
fit(model, (x[:128], y[:128]), epochs=4, objective=objective, optimizer=opt, scheduler=sched,
    batch_size=32, seed=2, progress=False, device="cpu", checkpoint=path, resume=True)
torch.save(model.state_dict(), out)
"""


def run(script, *args, pause=0.0):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(script), *map(str, args), str(pause)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(tmp_path):
    """4 epochs of 4 batches, 0.25 s asleep in each step: killed about half an epoch after the
    first checkpoint is committed; resuming gives bit-identical weights."""
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    straight = run(script, tmp_path / "straight.pt", tmp_path / "straight_w.pt")
    killed = run(script, tmp_path / "run.pt", tmp_path / "run_w.pt", pause=0.25)
    deadline = time.monotonic() + 120
    while not ckpt.sidecar_path(tmp_path / "run.pt").exists():
        assert killed.poll() is None, killed.stdout.read().decode()
        assert time.monotonic() < deadline, "no checkpoint within 2 minutes"
        time.sleep(0.05)
    time.sleep(0.5)  # about two of the next epoch's four steps
    killed.send_signal(signal.SIGKILL)
    assert killed.wait() == -signal.SIGKILL
    assert not (tmp_path / "run_w.pt").exists(), "killed before the end"
    done = ckpt.load(tmp_path / "run.pt")["epoch"]  # loads: the kill left a whole checkpoint
    assert 1 <= done < 4
    resumed = run(script, tmp_path / "run.pt", tmp_path / "run_w.pt")
    for proc in (resumed, straight):
        assert proc.wait(timeout=300) == 0, proc.stdout.read().decode()
    a = torch.load(tmp_path / "run_w.pt", weights_only=True)
    b = torch.load(tmp_path / "straight_w.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in b)
    assert ckpt.load(tmp_path / "run.pt")["history"] == ckpt.load(tmp_path / "straight.pt")["history"]


def _pgd_run(epochs, generator_seed, **kw):
    seed_everything(0)
    x, y = data.digits("test")
    model = models.MLP((1, 8, 8), (16,), 10)
    objective = pgd_at(eps=0.1, alpha=0.05, steps=2,
                       generator=torch.Generator().manual_seed(generator_seed))
    fit(model, (x[:64], y[:64]), epochs=epochs, objective=objective, batch_size=32, lr=1e-2,
        progress=False, device="cpu", **kw)
    return model


def test_objective_generator_is_checkpointed(tmp_path):
    """pgd_at draws its random starts from its own generator: resuming restores its state (a
    fresh generator would replay epoch 1's starts in epoch 3)."""
    straight = _pgd_run(3, 1)
    _pgd_run(2, 1, checkpoint=tmp_path / "run.pt")
    assert len(ckpt.load(tmp_path / "run.pt")["rng"]["objective"]) == 1
    resumed = _pgd_run(3, 1, checkpoint=tmp_path / "run.pt", resume=True)
    assert all(torch.equal(p, q) for p, q in zip(resumed.parameters(), straight.parameters()))


def test_objective_generators_found_through_wrappers_and_partials():
    from functools import partial

    g, h = torch.Generator(), torch.Generator()
    inner = pgd_at(eps=0.1, alpha=0.05, steps=1, generator=g)

    def wrapper(m, x, y):
        return inner(m, x, y)

    assert ckpt.objective_generators(wrapper) == [g]
    assert ckpt.objective_generators(partial(wrapper, h)) == [g, h] or \
        ckpt.objective_generators(partial(wrapper, h)) == [h, g]
    assert ckpt.objective_generators(pgd_at(eps=0.1, alpha=0.05, steps=1)) == []


def test_resume_with_another_objective_is_refused(tmp_path):
    _pgd_run(1, 1, checkpoint=tmp_path / "run.pt")
    seed_everything(0)
    x, y = data.digits("test")
    with pytest.raises(ValueError, match="generator"):
        fit(models.MLP((1, 8, 8), (16,), 10), (x[:64], y[:64]), epochs=2, batch_size=32,
            lr=1e-2, progress=False, device="cpu", checkpoint=tmp_path / "run.pt", resume=True)

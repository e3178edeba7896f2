"""No white-box iterative method waits for the device inside its loop.

Each method of benchmarks/host_syncs.py runs at a small and a large step count (inner steps of a
defence, batches of a training epoch, batches of smoothing's noise samples) while tests/syncs.py
counts the host synchronisations it makes; the counts must be equal: the checks at entry and the
reads of the result are allowed, one per step is not. The methods that stop early when done
(C&W, DeepFool) run on a model that nothing can fool, so that their loops run to the end; their
"all done?" reads, every steps // 10 steps, are then the same number at both step counts.
On CUDA the same runs count torch's own warnings under `torch.cuda.set_sync_debug_mode("warn")`.
"""

import functools
import warnings

import pytest
import torch
from torch import nn

from benchmarks.host_syncs import Setup, white_box_methods
from robustlab.attacks import lbfgs
from tests.syncs import count, explain, grows

METHODS = [m for m in white_box_methods() if not m.early_stop]
TRAINING = ("fit ibp", "fit crown_ibp")
# one training step of each loss-only defence: no read of the host at all, checks included
SYNC_FREE = ("pgd_at", "trades", "vat", "wrm", "smooth_adv", "fast_at (one step)", "fgsm_at (one step)")


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
def test_host_syncs_do_not_grow_with_steps(method):
    a, b = grows(method.run, method.small, method.large)
    assert b.total == a.total, explain(a, b)


@pytest.mark.parametrize("method", [m for m in METHODS if m.name in SYNC_FREE],
                         ids=lambda m: m.name)
def test_a_training_step_of_a_loss_only_defence_never_reads_the_host(method):
    syncs = count(lambda: method.run(method.large))
    assert syncs.total == 0, syncs.sites()


@pytest.mark.parametrize("method", [m for m in METHODS if m.name in TRAINING],
                         ids=lambda m: m.name)
def test_verified_training_reads_the_host_per_epoch_not_per_batch(method):
    # 1 and 3 batches cost the same: 0 reads per batch. What is left is per epoch: the
    # shuffled order of the data (train.py:89) and the epoch's sums, read once (train.py:118).
    a, b = grows(method.run, 1, 3)
    assert b.total == a.total <= 4, explain(a, b)


class Evaluations(nn.Module):
    """Counts the forward passes of `model`: one per evaluation of scipy's solver."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.calls = model, 0

    def forward(self, x):
        self.calls += 1
        return self.model(x)


def test_lbfgs_reads_the_host_once_per_evaluation_of_the_solver():
    # Unavoidable while the solver is scipy's L-BFGS-B: it runs on the host and asks for the
    # loss (.item()) and the gradient (.cpu(), .numpy()) at each evaluation, 3 reads each.
    s = Setup("cpu")
    syncs, evals = [], []
    for max_iter in (2, 6):
        model = Evaluations(s.model)
        syncs.append(count(lambda m=model, k=max_iter: lbfgs(m, s.x, s.y, targeted=False,
                                                             search_steps=1, max_iter=k)))
        evals.append(model.calls)
    assert evals[1] > evals[0]
    assert syncs[1].total - syncs[0].total == 3 * (evals[1] - evals[0]), explain(*syncs)


def _cuda_syncs(run) -> int:
    """The synchronising CUDA calls of `run()`, as torch's sync debug mode reports them."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


@functools.cache
def _on_cuda() -> dict:
    return {m.name: m for m in white_box_methods("cuda")}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", [m.name for m in METHODS])
def test_cuda_loops_never_wait_for_the_host(name):
    # torch's own account of what waits for the GPU (Adam's step counter on the host is not
    # among them, unlike on the CPU counter above): equal at both step counts
    method = _on_cuda()[name]
    small, large = (_cuda_syncs(lambda n=n: method.run(n)) for n in (method.small, method.large))
    assert large == small, f"{name}: {small} synchronising CUDA calls at {method.small} " \
                           f"{method.what}, {large} at {method.large}"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", SYNC_FREE)
def test_cuda_training_step_runs_under_sync_error_mode(name):
    method = _on_cuda()[name]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        method.run(method.large)  # raises RuntimeError at the first synchronising call
    finally:
        torch.cuda.set_sync_debug_mode("default")

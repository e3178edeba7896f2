"""Data-parallel adversarial training: two ranks (gloo on CPU here, NCCL on a machine with a GPU
per rank) take the steps one process takes on the same global batches; each rank's slices make
up fit's own batches."""

import warnings

import pytest
import torch
from torch import nn

from robustlab import data
from robustlab.defences import pgd_at
from robustlab.defences.distributed import (
    RankSlices,
    choose_backend,
    ddp_fit,
    launch,
    rank_device,
    rank_path,
    shard_batches,
)
from robustlab.train import fit

EPOCHS, BATCH, N = 2, 32, 96


def tiny_model() -> nn.Module:
    """No batch norm or dropout: its ranks' steps depend only on the averaged gradient."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 64, 10)).double()


def training_data():
    x, y = data.digits("train")
    return x[:N].double(), y[:N]


def objective():
    # no random start: the steps are then a function of the data and the weights alone
    return pgd_at(eps=0.1, alpha=0.04, steps=3, random_start=False)


def _rank(rank: int, world_size: int, out: str) -> None:
    torch.set_num_threads(1)
    model = tiny_model()
    ddp_fit(model, *training_data(), epochs=EPOCHS, batch_size=BATCH, seed=3, lr=1e-2,
            objective=objective(), progress=False)
    torch.save(model.state_dict(), f"{out}.{rank}")


def test_two_ranks_equal_one_process(tmp_path):
    """Float64 weights after 2 epochs of PGD-AT (3 global batches of 32 an epoch, Adam): both
    ranks equal each other exactly (DDP keeps them in step) and the one-process run within
    1e-10 (the ranks sum the gradient in another order); training moved them by ~1e-1."""
    launch(_rank, 2, str(tmp_path / "w"))
    # map to the CPU: under NCCL (two GPUs) the ranks saved CUDA tensors
    ranks = [torch.load(tmp_path / f"w.{r}", weights_only=True, map_location="cpu")
             for r in range(2)]
    single = tiny_model()
    start = {k: v.clone() for k, v in single.state_dict().items()}
    fit(single, training_data(), epochs=EPOCHS, batch_size=BATCH, seed=3, lr=1e-2,
        objective=objective(), progress=False, device="cpu")
    gap = max((ranks[0][k] - v).abs().max().item() for k, v in single.state_dict().items())
    print(f"largest weight difference, two ranks vs one process: {gap:.2e}")
    for key, value in single.state_dict().items():
        assert torch.equal(ranks[0][key], ranks[1][key]), key
        assert (ranks[0][key] - value).abs().max() < 1e-10, key
        assert (value - start[key]).abs().max() > 1e-2, "training moved the weights"


def test_shards_make_up_fits_batches():
    """Epoch after epoch, the ranks' slices of each batch, joined, are fit's batch (sizes
    differing by at most one), and the second epoch is shuffled afresh as fit's is."""
    x, y = torch.arange(70.0), torch.arange(70)
    loader = data.loader(x, y, batch_size=16, shuffle=True, seed=5)
    shards = [shard_batches(x, y, batch_size=16, seed=5, rank=r, world_size=3) for r in range(3)]
    epochs = []
    for _ in range(2):
        reference = [yb for _, yb in loader]
        parts = [[yb for _, yb in shard] for shard in shards]
        assert all(len(p) == len(reference) == 5 for p in parts)
        for b, batch in enumerate(reference):
            sizes = [len(parts[r][b]) for r in range(3)]
            assert torch.equal(torch.cat([parts[r][b] for r in range(3)]), batch)
            assert max(sizes) - min(sizes) <= 1
        epochs.append(torch.cat(reference))
    assert not torch.equal(*epochs)


def test_rank_path_and_bad_input(tmp_path):
    assert rank_path(tmp_path / "run.pt", 0) == tmp_path / "run.pt"
    assert rank_path(tmp_path / "run.pt", 2) == tmp_path / "run.pt.rank2"
    x, y = torch.rand(33, 1, 8, 8), torch.zeros(33, dtype=torch.long)
    with pytest.raises(ValueError, match="batch_size=16"):
        shard_batches(x, y, batch_size=16, rank=0, world_size=2)  # last batch: 1 example
    with pytest.raises(ValueError, match="batch_size"):
        shard_batches(x, y, batch_size=0, rank=0, world_size=2)
    with pytest.raises(RuntimeError, match="torchrun"):
        ddp_fit(tiny_model(), x, y, epochs=1, batch_size=8)
    with pytest.raises(ValueError, match="world_size"):
        launch(_rank, 0)


# issue 15: rank 5 of 2 failed while iterating, rank -1 silently took rank 1's data,
# world_size=0 was accepted, and a lone rank was silently replaced by torch.distributed's
@pytest.mark.parametrize("rank, world_size, error, message", [
    (5, 2, ValueError, r"rank \(world_size=2\) must lie in \[0, 1\], got 5"),
    (2, 2, ValueError, r"rank \(world_size=2\) must lie in \[0, 1\], got 2"),
    (-1, 2, ValueError, r"rank \(world_size=2\) must lie in \[0, 1\], got -1"),
    (1.0, 2, TypeError, r"rank \(world_size=2\) must be an int, got float"),
    (0, 0, ValueError, "world_size must be > 0, got 0"),
    (0, 2.0, TypeError, "world_size must be an int, got float"),
    (0, None, ValueError, "rank and world_size: pass both or neither"),
    (None, 2, ValueError, "rank and world_size: pass both or neither"),
])
def test_shard_batches_checks_rank_and_world_size(rank, world_size, error, message):
    x, y = torch.rand(32, 1, 8, 8), torch.zeros(32, dtype=torch.long)
    with pytest.raises(error, match=message):
        shard_batches(x, y, batch_size=16, rank=rank, world_size=world_size)
    if world_size == 2 and isinstance(rank, int):
        with pytest.raises(error, match=message):
            RankSlices([[0, 1, 2, 3]], rank, world_size)


# issue 16: on a one-GPU machine launch chose gloo but ddp_fit put rank 1 on cuda:1, and under
# NCCL the resume check gathered a CPU tensor, which NCCL refuses
@pytest.mark.parametrize("ranks, gpus, backend, devices", [
    (2, 0, "gloo", ["cpu", "cpu"]),
    (2, 1, "gloo", ["cpu", "cpu"]),
    (2, 2, "nccl", ["cuda:0", "cuda:1"]),
    (1, 1, "nccl", ["cuda:0"]),
    (1, 0, "gloo", ["cpu"]),
])
def test_backend_and_device_follow_the_gpu_count(ranks, gpus, backend, devices):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        chosen = choose_backend(ranks, gpus)
    assert chosen == backend
    assert [rank_device(chosen, r) for r in range(ranks)] == [torch.device(d) for d in devices]


def test_too_few_gpus_warns_and_bad_input_is_named():
    with pytest.warns(UserWarning, match="2 ranks but 1 visible GPU"):
        choose_backend(2, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no GPU at all is the plain CPU case: no warning
        choose_backend(2, 0)
    with pytest.raises(ValueError, match="local_ranks must be > 0"):
        choose_backend(0, 1)
    with pytest.raises(ValueError, match="gpus must lie in"):
        choose_backend(1, -1)
    with pytest.raises(ValueError, match="backend must be 'nccl' or 'gloo'"):
        rank_device("mpi", 0)
    with pytest.raises(ValueError, match="local_rank must lie in"):
        rank_device("nccl", -1)

"""Data-parallel adversarial training: `robustlab.train.fit` and any Objective, unchanged, on
several processes or machines with torch.distributed (DistributedDataParallel).

Each process (rank) trains the same model on its slice of every global batch; DDP averages the
gradients across ranks after ``loss.backward()``, so every rank takes the same optimiser step.
An adversarial objective (PGD-AT, TRADES, ...) crafts the adversarial examples of its own slice
with input gradients only (the parameters' ``requires_grad`` is off during the attack), so no
gradient is synchronised before the training loss's backward, and the objective needs no
change. With a model without batch norm or dropout, deterministic objectives (no random start)
and global batches that split evenly over the ranks, W ranks take exactly the steps one process
takes on the global batches (up to the order of floating-point sums): the mean of the ranks'
mean gradients is the gradient of the global mean.

Backend and device follow one rule (`choose_backend`, used by `launch`, the example script
and `ddp_fit`): NCCL with rank r on ``cuda:LOCAL_RANK`` when this machine has a GPU for each
of its ranks, else gloo with every rank on the CPU (a warning says so when GPUs are there but
too few). Collectives run on the rank's device: NCCL refuses CPU tensors.

Launch one process per rank with torchrun, e.g. the example script ``examples/ddp_pgd_at.py``,

    torchrun --nproc-per-node 2 examples/ddp_pgd_at.py --epochs 10 --checkpoint run.pt
    torchrun --nnodes 2 --node-rank 0 --master-addr HOST --master-port 29500 \\
        --nproc-per-node 4 examples/ddp_pgd_at.py ...

or from Python with `launch`, which spawns the ranks on this machine. Each rank writes its own
checkpoint (`rank_path`): ranks hold different RNG states, and a resumed run needs each rank's
own.
"""

from __future__ import annotations

import math
import os
import socket
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, Sampler, TensorDataset

from .. import checkpoint as _ckpt
from .._checks import check_in_range, check_positive
from ..train import fit

__all__ = ["RankSlices", "choose_backend", "ddp_fit", "launch", "rank_path", "rank_device",
           "shard_batches"]


def choose_backend(local_ranks: int, gpus: int | None = None, *, warn: bool = True) -> str:
    """"nccl" when each of this machine's `local_ranks` processes gets its own GPU, else "gloo".

    Args:
        local_ranks: processes on this machine (torchrun's LOCAL_WORLD_SIZE).
        gpus: visible CUDA devices; ``torch.cuda.device_count()`` if None.
        warn: warn when GPUs are there but too few, so the run falls back to the CPU.
    """
    check_positive(local_ranks, "local_ranks", integer=True)
    gpus = torch.cuda.device_count() if gpus is None else gpus
    check_in_range(gpus, "gpus", 0, math.inf, integer=True)
    if gpus >= local_ranks:
        return "nccl"
    if gpus and warn:
        # two ranks on one GPU deadlock NCCL; gloo on the CPU is slow but correct
        warnings.warn(f"{local_ranks} ranks but {gpus} visible GPU(s): NCCL needs one GPU per "
                      f"rank, so every rank trains on the CPU with gloo; start at most {gpus} "
                      f"ranks per machine to train on the GPUs", stacklevel=2)
    return "gloo"


def rank_device(backend: str, local_rank: int) -> torch.device:
    """Where a rank of `backend` computes: ``cuda:local_rank`` under NCCL, the CPU under gloo.

    Args:
        backend: torch.distributed's backend name, "nccl" or "gloo".
        local_rank: the rank's index on its machine (torchrun's LOCAL_RANK).
    """
    check_in_range(local_rank, "local_rank", 0, math.inf, integer=True)
    if backend == "nccl":
        return torch.device("cuda", local_rank)
    if backend == "gloo":
        return torch.device("cpu")
    raise ValueError(f"backend must be 'nccl' or 'gloo', got {backend!r}")


def _world() -> tuple[int, int]:
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("torch.distributed is not initialised: launch with torchrun (and call "
                           "dist.init_process_group) or use robustlab.defences.distributed.launch")
    return dist.get_rank(), dist.get_world_size()


def _check_rank(rank, world_size) -> None:
    """world_size an int > 0 and rank one of its ranks: a rank -1 would index from the end and
    take another rank's data."""
    check_positive(world_size, "world_size", integer=True)
    check_in_range(rank, f"rank (world_size={world_size})", 0, world_size - 1, integer=True)


class RankSlices(Sampler[list[int]]):
    """This rank's contiguous slice of each batch of `batches`, split as ``torch.tensor_split``."""

    def __init__(self, batches: Sampler[list[int]], rank: int, world_size: int):
        _check_rank(rank, world_size)
        self.batches, self.rank, self.world_size = batches, rank, world_size

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches:
            yield torch.tensor_split(torch.tensor(batch), self.world_size)[self.rank].tolist()

    def __len__(self) -> int:
        return len(self.batches)


def shard_batches(x: torch.Tensor, y: torch.Tensor, *, batch_size: int, seed: int = 0,
                  rank: int | None = None, world_size: int | None = None) -> DataLoader:
    """A DataLoader of this rank's part of each global batch of `batch_size` examples.

    The global batches are exactly those `fit` draws from ``(x, y)`` with the same `seed` (a
    DataLoader shuffling with a generator seeded with `seed`), so W ranks see together what one
    process sees. Each global batch is cut into W contiguous parts of sizes differing by at
    most one; a global batch with fewer than W examples (the last one) would leave a rank
    without data, and is refused. Rank and world size default (both) to torch.distributed's.
    """
    check_positive(batch_size, "batch_size", integer=True)
    if (rank is None) != (world_size is None):  # half of them would be silently replaced
        raise ValueError(f"rank and world_size: pass both or neither (torch.distributed's), got "
                         f"rank={rank!r} and world_size={world_size!r}")
    if rank is None:
        rank, world_size = _world()
    _check_rank(rank, world_size)
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"x and y must be non-empty and of the same length, got {len(x)} and "
                         f"{len(y)}")
    last = len(x) % batch_size or batch_size
    if min(batch_size, last) < world_size:
        raise ValueError(f"batch_size={batch_size} on {len(x)} examples leaves a global batch of "
                         f"{min(batch_size, last)} < {world_size} ranks: some rank would get no "
                         f"data; choose batch_size and the data size so each batch has >= "
                         f"world_size examples")
    dataset = TensorDataset(x, y)
    generator = torch.Generator().manual_seed(seed)
    batches = BatchSampler(RandomSampler(dataset, generator=generator), batch_size, drop_last=False)
    # the loader holds the same generator: it draws from it as fit's loader does (its worker
    # seed), and checkpoints find and restore it there
    return DataLoader(dataset, batch_sampler=RankSlices(batches, rank, world_size),
                      generator=generator)


def rank_path(path: str | os.PathLike, rank: int) -> Path:
    """The checkpoint of `rank`: `path` itself for rank 0, ``<path>.rank<r>`` for the others."""
    path = Path(path)
    return path if rank == 0 else path.with_name(f"{path.name}.rank{rank}")


def _check_resume_agrees(path: Path | None, resume: bool, device: torch.device) -> None:
    """All ranks resume from the same epoch: a crash between two ranks' saves is refused."""
    # on the rank's device: NCCL refuses to gather CPU tensors
    done = torch.tensor([_ckpt.load(path)["epoch"] if resume and path is not None
                         and _ckpt.exists(path) else 0], device=device)
    epochs = [torch.zeros_like(done) for _ in range(dist.get_world_size())]
    dist.all_gather(epochs, done)
    if len({int(e) for e in epochs}) > 1:
        raise RuntimeError(f"the ranks' checkpoints hold different epochs {[int(e) for e in epochs]}"
                           f" (a crash between two ranks' saves): resume each rank from the "
                           f"oldest or start afresh")


def ddp_fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, batch_size: int,
            seed: int = 0, checkpoint: str | os.PathLike | None = None, resume: bool = False,
            progress: bool = True, **fit_kwargs) -> list[dict]:
    """`robustlab.train.fit` on this rank's share of the data, gradients averaged by DDP.

    Call it on every rank after ``dist.init_process_group``. The model moves to this rank's
    device, set by the process group's backend (`rank_device`: ``cuda:LOCAL_RANK`` under
    NCCL, the CPU under gloo; pick the backend with `choose_backend`), and is wrapped in
    DistributedDataParallel, which first copies rank 0's parameters to every rank. `batch_size`
    is the global batch (see `shard_batches`); `fit_kwargs` (objective, optimizer, lr,
    scheduler, eval_data, ...) go to `fit` unchanged. With `checkpoint`, each rank saves every
    epoch to ``rank_path(checkpoint, rank)``; with ``resume=True`` each continues from its own
    file, and all must hold the same epoch. The history is this rank's (its losses are those
    of its slices); the model is trained in place.

    Seed each rank's own RNG differently (e.g. ``seed_everything(base + rank)``) for
    independent random starts; the shuffling is shared through `seed`.
    """
    rank, world_size = _world()
    # from the backend, not from torch.cuda: gloo on a machine with too few GPUs stays on the
    # CPU, where cuda:LOCAL_RANK would be an invalid ordinal on some rank
    device = rank_device(dist.get_backend(), int(os.environ.get("LOCAL_RANK", rank)))
    if device.type == "cuda":
        if device.index >= torch.cuda.device_count():  # NCCL chosen by hand with too few GPUs
            raise RuntimeError(f"this rank is {device} under NCCL but {torch.cuda.device_count()}"
                               f" GPU(s) are visible: start at most one rank per GPU, or gloo "
                               f"(choose_backend picks the right one)")
        torch.cuda.set_device(device)
    model.to(device)
    wrapped = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                      else None)
    path = None if checkpoint is None else rank_path(checkpoint, rank)
    _check_resume_agrees(path, resume, device)
    batches = shard_batches(x, y, batch_size=batch_size, seed=seed, rank=rank,
                            world_size=world_size)
    return fit(wrapped, batches, epochs=epochs, checkpoint=path, resume=resume and path is not None,
               device=device, progress=progress and rank == 0, **fit_kwargs)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_rank(rank: int, fn: Callable, world_size: int, port: int, backend: str, args) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size))
    dist.init_process_group(backend, rank=rank, world_size=world_size)
    try:
        fn(rank, world_size, *args)
    finally:
        dist.destroy_process_group()


def launch(fn: Callable, world_size: int, *args, backend: str | None = None) -> None:
    """Run ``fn(rank, world_size, *args)`` in `world_size` new processes on this machine, with
    torch.distributed initialised on a free localhost port; wait for all and raise if one fails.
    `fn` must be importable (defined at a module's top level): the processes are spawned, not
    forked. The backend defaults to `choose_backend(world_size)`: NCCL when there is a GPU per
    rank, else gloo on the CPU."""
    check_positive(world_size, "world_size", integer=True)
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    if backend is None:
        backend = choose_backend(world_size)
    mp.spawn(_run_rank, args=(fn, world_size, _free_port(), backend, args), nprocs=world_size,
             join=True)

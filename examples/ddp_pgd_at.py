"""PGD adversarial training of the digits CNN on several processes or machines (DDP).

    torchrun --nproc-per-node 2 examples/ddp_pgd_at.py --epochs 10 --checkpoint run.pt
    python examples/ddp_pgd_at.py --nproc 2 --epochs 10        # spawn the ranks here instead

Every rank trains on its slice of each global batch (`robustlab.defences.ddp_fit`); rerun the
same command with --resume after a crash to continue from the last epoch saved. Each rank
trains on its own GPU when the machine has one per rank (NCCL), else on the CPU (gloo).
"""

from __future__ import annotations

import argparse
import os
import sys

import torch.distributed as dist

from robustlab import data, models, seed_everything
from robustlab.defences import ddp_fit, launch, pgd_at
from robustlab.defences.distributed import choose_backend
from robustlab.train import evaluate


def train_rank(rank: int, world_size: int, args: argparse.Namespace) -> None:
    seed_everything(args.seed)  # the same initial weights everywhere (DDP copies rank 0's anyway)
    model = models.SmallCNN(1, 10, width=16, image_size=8)
    seed_everything(args.seed + rank)  # independent random starts on each rank
    x, y = data.digits("train")
    history = ddp_fit(model, x, y, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                      objective=pgd_at(eps=args.eps, alpha=2.5 * args.eps / args.steps,
                                       steps=args.steps),
                      lr=args.lr, checkpoint=args.checkpoint, resume=args.resume)
    if rank == 0:
        accuracy = evaluate(model, data.digits("test"))
        print(f"{world_size} ranks, {len(history)} epochs: last loss {history[-1]['loss']:.4f}, "
              f"test accuracy {accuracy:.4f}", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64, help="the global batch")
    p.add_argument("--eps", type=float, default=0.15)
    p.add_argument("--steps", type=int, default=7)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", help="save every epoch here (rank r > 0: <file>.rank<r>)")
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    p.add_argument("--nproc", type=int, default=0,
                   help="spawn this many ranks on this machine instead of running under torchrun")
    args = p.parse_args(argv)
    if args.nproc:
        launch(train_rank, args.nproc, args)
        return 0
    # the rule launch and ddp_fit follow: a GPU per rank on this machine, else all on the CPU
    dist.init_process_group(choose_backend(int(os.environ.get("LOCAL_WORLD_SIZE", 1))))
    try:
        train_rank(dist.get_rank(), dist.get_world_size(), args)
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Command line: ``robustlab zoo build|verify`` and ``robustlab attack`` on a zoo model.

    robustlab zoo verify
    robustlab attack --model digits-cnn --attack pgd --eps 0.05 0.1 0.2 [--device cuda]
"""

from __future__ import annotations

import argparse
import sys

import torch

from . import data, models, zoo
from ._checks import check_eps, check_positive
from .evaluate import PRESETS, markdown_table, robust_accuracy
from .utils import default_device


def attack_table(model_name: str, attack: str, eps_list, norm: str, n: int | None,
                 device: str | torch.device = "cpu") -> str:
    """Robust accuracy of a zoo model on its first `n` test examples for each eps, as markdown.

    Arguments:
        model_name: a zoo model; attack: a preset of `robustlab.evaluate.PRESETS`.
        eps_list: the radii; norm: "linf" or "l2".
        n: how many test examples (all when None; an `n` beyond the test split uses all of
            it, with a note on stderr).
        device: where the model and the data go, and the attack runs.
    """
    dataset = models.manifest().get(model_name, {}).get("dataset", "digits")
    x, y = data.load(dataset, "test")
    if n is not None and n > len(x):  # as `head -n` would, but not silently: the table says less
        print(f"note: -n {n} is more than the {len(x)} test examples of {dataset}: using all "
              f"{len(x)}", file=sys.stderr)
    x, y = x[:n].to(device), y[:n].to(device)
    model = models.pretrained(model_name, device=device)
    curve = robust_accuracy(model, x, y, PRESETS[attack], eps_list=eps_list, norm=norm)
    return markdown_table(["eps", "robust accuracy"],
                          [(f"{e:g}", f"{a:.3f}") for e, a in zip(curve.eps, curve.accuracy)])


def _eps(text: str) -> float:
    """An --eps value: a finite number >= 0 (argparse turns the error into a usage error)."""
    try:
        return check_eps(float(text), "--eps")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _count(text: str) -> int:
    """A -n value: a whole number > 0."""
    try:
        return check_positive(int(text), "-n", integer=True)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"-n must be a whole number > 0, got {text!r}") from e


def _device(text: str) -> torch.device:
    """A --device value that this machine has: "cpu", "cuda", "cuda:1", ..."""
    try:
        device = torch.device(text)
        torch.empty(0, device=device)  # "cuda" without CUDA, or a GPU index beyond the count
    except (RuntimeError, AssertionError) as e:
        raise argparse.ArgumentTypeError(f"--device {text!r} is not usable here "
                                         f"({str(e).splitlines()[0]})") from None
    return device


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="robustlab", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    z = sub.add_parser("zoo", help="build or verify the model zoo")
    z.add_argument("action", choices=["build", "verify"])
    a = sub.add_parser("attack", help="robust accuracy of a zoo model under an attack")
    a.add_argument("--model", default="digits-cnn", choices=sorted(models.ARCHITECTURES))
    a.add_argument("--attack", default="pgd", choices=sorted(PRESETS))
    a.add_argument("--eps", type=_eps, nargs="+", default=[0.0, 0.1, 0.2])
    a.add_argument("--norm", default="linf", choices=["linf", "l2"])
    a.add_argument("-n", type=_count, default=None,
                   help="use the first n test examples (all, with a note, if there are fewer)")
    a.add_argument("--device", type=_device, default=None,
                   help="where to run: cpu, cuda, cuda:1, ... (default: CUDA when available)")
    args = p.parse_args(argv)
    if args.cmd == "zoo":
        return zoo.main([args.action])
    print(attack_table(args.model, args.attack, args.eps, args.norm, args.n,
                       default_device(args.device)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

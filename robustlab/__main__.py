"""Command line: ``robustlab zoo build|verify``, ``robustlab attack`` on a zoo model, and
``robustlab evaluate|certify|verify|clever`` on your own model (a TorchScript or torch.export file) or
a zoo model.

    robustlab zoo verify
    robustlab attack --model digits-cnn --attack pgd --eps 0.05 0.1 0.2 [--device cuda]
    robustlab evaluate --model mymodel.pt --data mydata.npz --attack pgd fgsm --eps 0.05 0.1
    robustlab certify --model digits-cnn-noise --data digits --sigma 0.25 --radius 0 0.25 0.5
    robustlab verify --model digits-mlp-ibp --data digits --eps 0.01 --method crown
    robustlab clever --model digits-mlp --data digits -n 20 --radius 2
"""

from __future__ import annotations

import argparse
import sys

import torch

from . import data, models, zoo
from ._checks import check_eps, check_in_range, check_positive, check_seed
from .cli_inputs import UsageError, check_model_takes, check_output_path, load_data, load_model
from .cli_runs import Report, certify_report, clever_report, evaluate_report, verify_report, write_json
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


def _whole(option: str):
    """An argparse type for `option`: a whole number > 0."""
    def parse(text: str) -> int:
        try:
            return check_positive(int(text), option, integer=True)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"{option} must be a whole number > 0, "
                                             f"got {text!r}") from e
    return parse


_count = _whole("-n")  # -n of every command: how many examples


def _radius(text: str) -> float:
    """A --radius value: a finite number >= 0."""
    try:
        return check_eps(float(text), "--radius")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _device(text: str) -> torch.device:
    """A --device value that this machine has: "cpu", "cuda", "cuda:1", ..."""
    try:
        device = torch.device(text)
        torch.empty(0, device=device)  # "cuda" without CUDA, or a GPU index beyond the count
    except (RuntimeError, AssertionError) as e:
        raise argparse.ArgumentTypeError(f"--device {text!r} is not usable here "
                                         f"({str(e).splitlines()[0]})") from None
    return device


def _seed(text: str) -> int:
    """A --seed value: a whole number in [0, 2**32)."""
    try:
        return check_seed(int(text), "--seed")
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seed must be a whole number in [0, 2**32), "
                                         f"got {text!r}") from None


def _number(option: str, low: float, high: float, *, low_open: bool = False):
    """An argparse type: a number in [low, high] (open at low when `low_open`) for `option`."""
    def parse(text: str) -> float:
        try:
            return check_in_range(float(text), option, low, high, low_open=low_open)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"{option} must be a number in "
                                             f"{'(' if low_open else '['}{low:g}, {high:g}], "
                                             f"got {text!r}") from e
    return parse


def _shared_options(p: argparse.ArgumentParser) -> None:
    """The options every command on your own model takes: what to load and where to write."""
    p.add_argument("--model", required=True,
                   help="a TorchScript file (torch.jit.save), a torch.export file "
                        "(torch.export.save) or a zoo model name")
    p.add_argument("--data", required=True,
                   help="an embedded set's test split (digits, traffic-lights, colour-digits) or "
                        "an .npz file with x (N, C, H, W) floats in [0, 1] and y (N,) labels")
    p.add_argument("-n", type=_count, default=None, dest="examples",
                   help="use the first n examples (default: all)")
    p.add_argument("--device", type=_device, default=None,
                   help="where to run: cpu, cuda, cuda:1, ... (default: CUDA when available)")
    p.add_argument("--seed", type=_seed, default=0,
                   help="seed of the random draws (PGD's start, smoothing's noise)")
    p.add_argument("--json", default=None, metavar="OUT.json",
                   help="also write the report's numbers to this JSON file")


def _own_model_parsers(sub) -> dict[str, argparse.ArgumentParser]:
    """The parsers of evaluate, certify and verify."""
    e = sub.add_parser("evaluate", help="clean and robust accuracy of your model under attacks")
    e.add_argument("--attack", nargs="+", action="extend", choices=sorted(PRESETS),
                   help="one or more attacks (repeatable; default: pgd)")
    e.add_argument("--eps", type=_eps, nargs="+", required=True)
    e.add_argument("--norm", default="linf", choices=["linf", "l2"])
    c = sub.add_parser("certify", help="certified accuracy of your model under randomized "
                                       "smoothing (Cohen et al.)")
    c.add_argument("--sigma", type=_number("--sigma", 0, float("inf"), low_open=True),
                   required=True, help="standard deviation of the Gaussian noise")
    c.add_argument("--n0", type=_whole("--n0"), default=100, help="samples to select the class")
    c.add_argument("--n", type=_whole("--n"), default=1000, dest="samples",
                   help="samples to estimate its probability")
    c.add_argument("--alpha", type=_number("--alpha", 0, 1, low_open=True), default=0.001,
                   help="failure probability of each certificate")
    c.add_argument("--radius", type=_radius, nargs="+", default=[0.0, 0.25, 0.5],
                   help="L2 radii at which to report certified accuracy")
    v = sub.add_parser("verify", help="verified accuracy of a chain of layers over eps-balls")
    v.add_argument("--eps", type=_eps, nargs="+", required=True)
    v.add_argument("--norm", default="linf", choices=["linf", "l2"])
    v.add_argument("--method", default="crown", choices=["interval", "crown", "milp"])
    v.add_argument("--time-limit", type=_number("--time-limit", 0, float("inf"), low_open=True),
                   default=60.0, help="seconds per MILP solve (milp only)")
    s = sub.add_parser("clever", help="CLEVER scores of your model (Weng et al.): an estimate, "
                                      "not a bound, of the smallest change that alters it")
    s.add_argument("--norm", default="l2", choices=["l1", "l2", "linf"])
    s.add_argument("--radius", type=_number("--radius", 0, float("inf"), low_open=True),
                   required=True, help="the ball sampled, and the largest score reported")
    s.add_argument("--batches", type=_whole("--batches"), default=50,
                   help="batch maxima of the gradient norm to fit (the paper: 500)")
    s.add_argument("--batch-size", type=_whole("--batch-size"), default=100,
                   help="points per batch (the paper: 1024)")
    for p in (e, c, v, s):
        _shared_options(p)
    return {"evaluate": e, "certify": c, "verify": v, "clever": s}


def _parsers() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The top-level parser and each subcommand's parser (whose usage its errors print)."""
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
    return p, {"zoo": z, "attack": a, **_own_model_parsers(sub)}


def own_model_report(args: argparse.Namespace) -> Report:
    """Load --model and --data as `args` says, check they fit, and run the command's report."""
    check_output_path(args.json)
    device = default_device(args.device)
    model = load_model(args.model, device)
    x, y = load_data(args.data, args.examples)
    x, y = x.to(device), y.to(device)
    check_model_takes(model, x, y)
    about = {"command": args.cmd, "model": args.model, "data": args.data, "examples": len(x)}
    if args.cmd == "evaluate":
        return evaluate_report(model, x, y, attacks=args.attack or ["pgd"], eps_list=args.eps,
                               norm=args.norm, seed=args.seed, about=about)
    if args.cmd == "certify":
        return certify_report(model, x, y, sigma=args.sigma, n0=args.n0, n=args.samples,
                              alpha=args.alpha, radii=args.radius, seed=args.seed, about=about)
    if args.cmd == "clever":
        return clever_report(model, x, y, norm=args.norm, radius=args.radius,
                             n_batches=args.batches, batch_size=args.batch_size, seed=args.seed,
                             about=about)
    return verify_report(model, x, y, eps_list=args.eps, norm=args.norm, method=args.method,
                         time_limit=args.time_limit, about=about)


def main(argv=None) -> int:
    """Run the command line on `argv` (default: sys.argv[1:]); returns the exit code."""
    parser, commands = _parsers()
    args = parser.parse_args(argv)
    if args.cmd == "zoo":
        return zoo.main([args.action])
    if args.cmd == "attack":
        print(attack_table(args.model, args.attack, args.eps, args.norm, args.n,
                           default_device(args.device)))
        return 0
    try:
        report = own_model_report(args)
    except UsageError as err:
        commands[args.cmd].error(f"argument {err.option}: {err}")
    print(report.table())
    if args.json is not None:
        write_json(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())

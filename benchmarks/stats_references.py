"""Benchmark robustlab.stats against the authors' code: multi-level splitting against Webb et al.'s
(oval-group/statistical-robustness), the complexity measures of the tutorial's Table 1
against Jin et al.'s notebook (NeurIPS 2020 weight correlation), and neuron coverage and
concolic testing against DeepConcolic (Sun et al., ASE 2018; TrustAI/DeepConcolic).

    python benchmarks/stats_references.py [--device cpu|cuda] [--oval DIR] [--wc DIR]
        [--repeats 10] [--particles 2000] [--mh-steps 100] [--eps E ...] [--seed 0]
        [--models NAME ...] [--deepconcolic DIR] [--deepconcolic-python PATH]
        [--dc-seeds 1] [--dc-budgets B ...] [--skip split|wc|dc]

Neither reference is a package: each is a checkout of its repository (`make bench` clones them,
at the commits benchmarks/README.md names, under build/refs/), found through --oval / --wc, else
the environment variables OVAL_SPLITTING / WEIGHT_CORRELATION, else build/refs/. An empty
--oval or --wc, or a folder that is not there, skips that table with a message. Nothing of
either is copied here: the script reads the reference's file from the checkout at run time and
runs the reference's own definitions (below), unmodified.

Table 1: `robustlab.stats.splitting` against `multilevel_uniform` of the reference's
exp_6_3_mnist/run_exp.py (the MNIST experiment of Webb et al., section 6.3). That file
downloads MNIST and runs the experiment at import, so only the function's definition is taken
from it (parsed with `ast`, compiled and run in a namespace that gives it its module's names:
torch, torch.distributions, math, CUDA, and the image range x_min = 0, x_max = 1 of the digits
instead of MNIST's normalised one). Both estimate log P(max_{j != y} z_j - z_y >= 0) under
noise uniform on the L-inf ball of radius eps intersected with [0, 1]^d, with the same
particles, rho = 0.1 and Metropolis-Hastings moves per level; --repeats runs of each, seeds
--seed, --seed + 1, ... Events: the 8-pixel sum classifier of benchmarks/stats.py (exact
Irwin-Hall tail), then digits-mlp on test image 0.

Table 2: the complexity measures against the cells of the reference's
Complexity_Measure/complexity_measure_cifar10.ipynb (PFN, PSN, NOP, SOSP, WC, PB and gw, the
correlation term of PBC). The notebook reads Keras models through `get_weights()`; a stand-in
gives it our layers' weights in Keras's layouts (a Dense kernel (in, out), a Conv2D kernel
(kh, kw, in, out), each followed by its bias), in float64. Its `cosine` comes from its first
cell (parsed, as above: that cell also loads the authors' Keras models); each measure's cell
then runs unchanged with every model name it reads bound to the one model measured.
Where the definitions differ, the table checks the relation between the two that must hold;
benchmarks/README.md lists the differences and the measured numbers.

Table 3: DeepConcolic is Keras code for Python <= 3.8 (it subclasses NamedTuple with mixins),
so it runs in a separate TensorFlow environment (`make bench-deepconcolic` builds it under
build/tfvenv; --deepconcolic-python or DEEPCONCOLIC_PYTHON points elsewhere). This script
writes digits-mlp's weights, the digits test set and the seeds to an .npz and runs
benchmarks/deepconcolic_side.py with that python, which rebuilds the network in Keras and runs
DeepConcolic's own coverage and NC concolic engine (LP, L-inf). Neuron coverage must agree
neuron by neuron (robustlab's relu(z) > 0 and DeepConcolic's z >= 0 differ only where z is
exactly 0); the concolic runs are compared at equal LP budgets, the tests of both within
L-inf 0.25 of their seed.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import copy
import importlib.util
import io
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
from fractions import Fraction
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from torch import nn

from robustlab import data, models
from robustlab.losses import margin_loss
from robustlab.stats import complexity, coverage, splitting, testing
from robustlab.tables import markdown_table

ROOT = Path(__file__).resolve().parents[1]
OVAL_FILE = "exp_6_3_mnist/run_exp.py"
WC_FILE = "Complexity_Measure/complexity_measure_cifar10.ipynb"
CHECKOUTS = {"oval": ("OVAL_SPLITTING", "build/refs/statistical-robustness"),
             "wc": ("WEIGHT_CORRELATION", "build/refs/NeurIPS2020_Weight_Correlation"),
             "deepconcolic": ("DEEPCONCOLIC", "build/refs/DeepConcolic")}
FILES = {"oval": OVAL_FILE, "wc": WC_FILE, "deepconcolic": "deepconcolic/nc_pulp.py"}
DC_FACTOR = 0.25  # DeepConcolic's default L-inf bound of a test around its seed (--norm-factor)

# the sum classifier, its exact tail and the timer of benchmarks/stats.py (one copy of each)
_spec = importlib.util.spec_from_file_location("bench_stats", Path(__file__).with_name("stats.py"))
bench_stats = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_stats)


def checkout(option: str | None, name: str) -> Path | None:
    """The reference's folder: the option, else its environment variable, else build/refs/;
    None where it is empty or not a folder holding the reference's file."""
    variable, default = CHECKOUTS[name]
    value = option if option is not None else os.environ.get(variable, str(ROOT / default))
    if not value:
        return None
    path = Path(value)
    return path if (path / FILES[name]).is_file() else None


def defined(source: str, name: str, namespace: dict):
    """The top-level function `name` of `source`, defined in `namespace`: nothing else of the
    file runs (its module code downloads data and runs the authors' experiments)."""
    tree = ast.parse(source)
    nodes = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name]
    if not nodes:
        raise ValueError(f"the reference has no function {name} (another commit?)")
    exec(compile(ast.Module(nodes, type_ignores=[]), f"<reference {name}>", "exec"), namespace)
    return namespace[name]


# --------------------------------------------------------------------------- table 1: splitting

def oval_splitting(path: Path, device: torch.device):
    """Webb et al.'s multilevel_uniform, with the names its module would give it."""
    namespace = {"torch": torch, "dist": torch.distributions, "math": math,
                 "CUDA": device.type == "cuda", "x_min": 0.0, "x_max": 1.0}
    return defined((path / OVAL_FILE).read_text(), "multilevel_uniform", namespace)


def _theirs(reference, model, x, y, eps, args, seed) -> float:
    """One run of the reference on one example: the natural log of its estimate."""
    shape = x.shape[1:]

    def prop(points):  # the reference's property: flat inputs (particles, d) -> s
        z = model(points.view(-1, *shape))
        return margin_loss(z, y.expand(len(z)))

    torch.manual_seed(seed)  # the reference draws from torch's global generators
    # written for torch < 1.8, where distributions did not check their arguments: its reverse
    # proposal's log_prob meets points a rounding outside the support (density 0: rejected)
    validate = torch.distributions.Distribution._validate_args
    torch.distributions.Distribution.set_default_validate_args(False)
    try:
        with torch.no_grad():
            log_p, *_ = reference(prop, x.flatten(), sigma=eps, rho=0.1,
                                  count_particles=args.particles, count_mh_steps=args.mh_steps,
                                  debug=False, stats=False)
    finally:
        torch.distributions.Distribution.set_default_validate_args(validate)
    return float(log_p)


def _ours(model, x, y, eps, args, seed) -> float:
    result = splitting(model, x[None], y[None], eps=eps, n_particles=args.particles, rho=0.1,
                       mh_steps=args.mh_steps, generator=torch.Generator().manual_seed(seed))
    return result.log_prob.item()


def _spread(logs: list[float]) -> tuple[float, float, int]:
    """Mean and standard deviation of the finite log10 estimates, and how many were -inf."""
    finite = [v / math.log(10) for v in logs if math.isfinite(v)]
    if not finite:
        return -math.inf, math.nan, len(logs)
    sd = statistics.stdev(finite) if len(finite) > 1 else math.nan
    return statistics.fmean(finite), sd, len(logs) - len(finite)


def _z(a: tuple, b_mean: float, b_sd: float, repeats: int) -> float:
    """|mean_a - mean_b| in standard errors of the difference (b_sd 0 for an exact value)."""
    se = math.sqrt((a[1] ** 2 + b_sd ** 2) / repeats)
    return abs(a[0] - b_mean) / se if se > 0 else math.inf


def _split_row(name, exact, reference, model, x, y, eps, args, device):
    seeds = range(args.seed, args.seed + args.repeats)
    ours, t_ours = bench_stats._timed(lambda: [_ours(model, x, y, eps, args, s) for s in seeds],
                                      device)
    theirs, t_theirs = bench_stats._timed(
        lambda: [_theirs(reference, model, x, y, eps, args, s) for s in seeds], device)
    a, b = _spread(ours), _spread(theirs)
    z = _z(a, b[0], b[1], args.repeats)
    log_exact = math.log10(exact) if exact is not None else None
    z_ours = None if exact is None else _z(a, log_exact, 0.0, args.repeats)
    z_theirs = None if exact is None else _z(b, log_exact, 0.0, args.repeats)
    worst = max(v for v in (z, z_ours, z_theirs) if v is not None)
    verdict = "agree" if worst <= 3 and a[2] == b[2] == 0 else "DIFFER"
    return [name, log_exact, a[0], a[1], b[0], b[1], z, z_ours, z_theirs, verdict,
            t_ours / args.repeats, t_theirs / args.repeats]


def table_splitting(reference, args, device) -> str:
    half = torch.full((1, 1, 1, bench_stats.D), 0.5, device=device)
    zero = torch.zeros(1, dtype=torch.long, device=device)
    rows = [_split_row(f"sum of {bench_stats.D} >= {float(t):g}", bench_stats.irwin_hall_tail(t),
                       reference, bench_stats.sum_classifier(float(t), device), half[0], zero[0],
                       0.5, args, device)
            for t in (Fraction(6), Fraction(7), Fraction(38, 5), Fraction(79, 10))]
    model = models.pretrained("digits-mlp", device=device)
    x, y = (t[0].to(device) for t in data.digits("test"))
    rows += [_split_row(f"digits-mlp, test image 0, eps {eps:g}", None, reference, model, x, y,
                        eps, args, device) for eps in args.eps]
    return "\n".join([
        f"### Splitting against Webb et al.'s multilevel_uniform ({device.type}): "
        f"{args.particles} particles, rho 0.1, {args.mh_steps} moves per level, "
        f"{args.repeats} runs each", "",
        markdown_table(["event", "exact log10 P", "robustlab mean", "robustlab sd",
                        "reference mean", "reference sd", "z (robustlab - reference)",
                        "z (robustlab - exact)", "z (reference - exact)", "verdict",
                        "robustlab s / run", "reference s / run"], rows,
                       decimals=[None, 3, 3, 3, 3, 3, 2, 2, 2, None, 3, 3]),
        "", "log10 of the estimates; z: the difference of the means in standard errors "
        "(sd / sqrt(runs), both runs' added); agree: every z <= 3 and no run at -inf."])


# --------------------------------------------------------------------------- table 2: WC, PBC

class KerasWeights:
    """What the notebook reads of a Keras model: `get_weights()`, each layer's kernel in Keras's
    layout and then its bias, float64 (the cells assign into the list: a fresh copy per call)."""

    def __init__(self, model: nn.Module):
        self.arrays = []
        for _, m in complexity.layers(model):
            w = m.weight.detach().double().cpu()
            self.arrays.append((w.T if w.dim() == 2 else w.permute(2, 3, 1, 0)).numpy().copy())
            if m.bias is not None:
                self.arrays.append(m.bias.detach().double().cpu().numpy().copy())

    def get_weights(self) -> list[np.ndarray]:
        return [a.copy() for a in self.arrays]


def notebook_measures(path: Path):
    """A function (final, initial) -> the notebook's measures {PFN, PSN, NOP, SOSP, WC, PB, gw}."""
    cells = ["".join(c["source"]) for c in json.loads((path / WC_FILE).read_text())["cells"]
             if c["cell_type"] == "code"]
    base = {"np": np, "LA": np.linalg}
    defined(cells[0], "cosine", base)
    measure_cells = {}
    for src in cells[1:]:
        for key in ("PFN", "PSN", "NOP", "SOSP", "WC", "PB", "gw"):
            if f"print('{key}:')" in src:
                measure_cells[key] = src
    names = {n.id for src in measure_cells.values() for n in ast.walk(ast.parse(src))
             if isinstance(n, ast.Name) and n.id.endswith(("_final", "_initial"))}

    def run(final: nn.Module, initial: nn.Module) -> dict[str, float]:
        stand_ins = {"final": KerasWeights(final), "initial": KerasWeights(initial)}
        out = {}
        for key, src in measure_cells.items():
            namespace = dict(base, **{n: stand_ins[n.rsplit("_", 1)[1]] for n in names})
            with contextlib.redirect_stdout(io.StringIO()):  # each cell prints its list
                exec(compile(src, f"<notebook {key}>", "exec"), namespace)
            out[key] = float(namespace[f"{key}_measure"][0])
        return out

    return run


_paper_rho = complexity.layer_correlation  # robustlab's, kept before any patching


def _with_diagonal(module: nn.Module) -> float:
    """rho of a layer in the notebook's convention: the mean |cosine| over all n^2 pairs of its
    units, the n self-pairs (cosine 1) included: (1 + (n - 1) rho) / n, rho robustlab's."""
    n = module.weight.shape[0]
    return (1 + (n - 1) * _paper_rho(module)) / n


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-300)


def _hand_layers(seed: int) -> list[tuple[str, nn.Module]]:
    """One-layer networks on which the notebook's definitions and the paper's can be compared
    exactly: a Dense layer with at most 9 inputs (the notebook's WC reads the first 9) and a
    3x3 convolution (it skips 1x1 kernels)."""
    torch.manual_seed(seed)
    return [("Linear(9, 6)", nn.Linear(9, 6)), ("Conv2d(3, 5, 3)", nn.Conv2d(3, 5, 3))]


def table_complexity(measure, args) -> str:
    rows = []
    for name, layer in _hand_layers(args.seed):
        initial = copy.deepcopy(layer)
        torch.manual_seed(args.seed + 1)
        initial.reset_parameters()
        final = nn.Sequential(layer)
        ref = measure(final, nn.Sequential(initial))
        with mock.patch.object(complexity, "layer_correlation", _with_diagonal):
            wc_diag = complexity.weight_correlation(final)
            g_diag = complexity.correlation_term(layer)
        pairs = [("PFN", ref["PFN"], complexity.frobenius_product(final), 0.0, "equal"),
                 ("PB", ref["PB"], complexity.pac_bayes(final, nn.Sequential(initial)), 0.0,
                  "equal"),
                 ("WC", ref["WC"], wc_diag, 0.0, "equal, self-pairs counted")]
        if isinstance(layer, nn.Linear):
            pairs.append(("gw (PBC - PB)", ref["gw"], g_diag, 0.0, "equal, self-pairs counted"))
        else:  # the notebook's Conv cell adds m log(1 + (n - 1) rho) where its Dense cell subtracts it
            n, m = layer.weight.shape[:2]
            pairs.append(("gw (PBC - PB)", ref["gw"], g_diag,
                          2 * m * math.log1p((n - 1) * _with_diagonal(layer)),
                          "self-pairs counted; reference = robustlab + 2 m log(1 + (n - 1) rho)"))
        rows += [[name, key, theirs, ours, _rel(ours + shift, theirs), how,
                  "ok" if _rel(ours + shift, theirs) <= 1e-4 else "MISS"]
                 for key, theirs, ours, shift, how in pairs]
    for zoo in args.models:
        final = models.pretrained(zoo)
        torch.manual_seed(args.seed)
        initial = models.ARCHITECTURES[zoo]()
        ref = measure(final, initial)
        layers = complexity.layers(final)
        biases = sum(m.bias.numel() for _, m in layers if m.bias is not None)
        nop = complexity.parameter_count(final)
        weights = nop - biases
        pfn, pb = complexity.frobenius_product(final), complexity.pac_bayes(final, initial)
        psn, sosp = complexity.spectral_product(final), complexity.spectral_sum(final, initial)
        wc = complexity.weight_correlation(final)
        g = sum(complexity.correlation_term(m) for _, m in layers)
        rows += [
            [zoo, "PFN", ref["PFN"], pfn, _rel(pfn, ref["PFN"]), "equal",
             "ok" if _rel(pfn, ref["PFN"]) <= 1e-9 else "MISS"],
            [zoo, "PB", ref["PB"], pb, _rel(pb, ref["PB"]), "equal",
             "ok" if _rel(pb, ref["PB"]) <= 1e-9 else "MISS"],
            [zoo, "NoP", int(ref["NOP"]), nop, None, "reference = 1 + weights without biases",
             "ok" if ref["NOP"] == 1 + weights else "MISS"],
            [zoo, "PSN", ref["PSN"], psn, None, "reference >= (a bound on each norm)",
             "ok" if ref["PSN"] >= psn * (1 - 1e-12) else "MISS"],
            [zoo, "SoSP", ref["SOSP"], sosp, None,
             "reference / weights >= robustlab / NoP (bound)",
             "ok" if ref["SOSP"] / weights >= sosp / nop * (1 - 1e-12) else "MISS"],
            [zoo, "WC", ref["WC"], wc, None, "differ by definition (README)", "-"],
            [zoo, "gw (PBC - PB)", ref["gw"], g, None, "differ by definition (README)", "-"]]
    return "\n".join([
        "### Complexity measures against Jin et al.'s notebook (NeurIPS 2020)", "",
        markdown_table(["network", "measure", "reference", "robustlab",
                        "relative difference (after the relation)", "relation", "holds"], rows),
        "", "One-layer networks: robustlab's WC and correlation term recomputed with each "
        "layer's rho in the notebook's convention (self-pairs counted; the relation must hold "
        "to 1e-4, the notebook adds 1e-5 inside its cosine). Zoo networks: initial weights a "
        f"fresh draw of the architecture with seed {args.seed}."])


# --------------------------------------------------------------------------- table 3: DeepConcolic

def dc_python(option: str | None) -> Path | None:
    """The TensorFlow environment's python: the option, else DEEPCONCOLIC_PYTHON, else
    build/tfvenv/bin/python; None where it is empty or no file."""
    value = option if option is not None else os.environ.get(
        "DEEPCONCOLIC_PYTHON", str(ROOT / "build/tfvenv/bin/python"))
    return Path(value) if value and Path(value).is_file() else None


def _deepconcolic_run(python: Path, path: Path, model, x, seeds, args) -> dict:
    """deepconcolic_side.py in the TensorFlow environment on digits-mlp's weights, the test
    inputs `x` and the concolic `seeds`; its JSON result."""
    linear = [m for m in model if isinstance(m, nn.Linear)]
    weights = {f"{k}{i}": getattr(m, name).detach().cpu().numpy()
               for i, m in enumerate(linear) for k, name in (("w", "weight"), ("b", "bias"))}
    with torch.no_grad():
        logits = model(x).numpy()
    with tempfile.TemporaryDirectory() as tmp:
        npz, out = Path(tmp) / "in.npz", Path(tmp) / "out.json"
        np.savez(npz, inputs=x.flatten(1).numpy(), logits=logits, seeds=seeds.flatten(1).numpy(),
                 checkpoints=np.array(args.dc_budgets), factor=DC_FACTOR, lb_hard=1 / 255,
                 lb_noise=0.1, seed=args.seed, **weights)
        proc = subprocess.run([str(python), str(Path(__file__).with_name("deepconcolic_side.py")),
                               "--checkout", str(path), "--npz", str(npz), "--out", str(out)],
                              capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
        if proc.returncode != 0:
            raise RuntimeError(f"deepconcolic_side.py failed ({proc.returncode}):\n"
                               f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
        return json.loads(out.read_text())


def table_deepconcolic(python: Path, path: Path, args) -> str:
    model = models.pretrained("digits-mlp")
    x = data.digits("test")[0]
    seeds = x[:args.dc_seeds]
    theirs = _deepconcolic_run(python, path, model, x, seeds, args)
    cov, t_cov = bench_stats._timed(lambda: coverage.neuron_coverage(model, x), torch.device("cpu"))
    same = int((cov.covered.numpy() == np.array(theirs["coverage"]["mask"])).sum())
    rows = [["robustlab neuron_coverage, relu(z) > 0", cov.n_covered, cov.total, t_cov],
            ["DeepConcolic NcLayer, z >= 0", theirs["coverage"]["covered"],
             theirs["coverage"]["total"], theirs["coverage"]["seconds"]]]
    verdict = "equal" if same == cov.total and theirs["logits_max_diff"] <= 1e-5 else "DIFFER"
    runs = []
    for run in theirs["concolic"][1:]:
        ours, t = bench_stats._timed(lambda b=run["budget"]: testing.concolic(
            model, seeds, budget=b, eps=DC_FACTOR, margin=1e-4), torch.device("cpu"))
        runs.append([run["budget"], ours.steps[-1], ours.coverage.n_covered, len(ours.tests),
                     len(ours.adversarial), t, run["covered"], run["tests"],
                     run["adversarial"], run["seconds"]])
    return "\n".join([
        f"### Neuron coverage and concolic testing against DeepConcolic (TensorFlow "
        f"{theirs['tensorflow']}, Python {theirs['python']})", "",
        f"digits-mlp rebuilt in Keras: largest |logit difference| on the {len(x)} test inputs "
        f"{theirs['logits_max_diff']:.1e}. Neuron coverage of those inputs, threshold 0:", "",
        markdown_table(["definition", "covered", "total", "seconds"], rows,
                       decimals=[None, None, None, 3]), "",
        f"The two agree on {same} of {cov.total} neurons: {verdict}.", "",
        f"Concolic testing from the first {len(seeds)} test input(s) (they cover "
        f"{coverage.neuron_coverage(model, seeds).n_covered} neurons for robustlab, "
        f"{theirs['concolic'][0]['covered']} for DeepConcolic), budget = LP solves; tests within L-inf "
        f"{DC_FACTOR} of their seed (robustlab: a constraint of the LP; DeepConcolic: its "
        "filter after the solve):", "",
        markdown_table(["budget", "robustlab solves", "robustlab covered", "robustlab tests",
                        "robustlab adversarial",
                        "robustlab s", "DeepConcolic covered", "DeepConcolic tests",
                        "DeepConcolic adversarial", "DeepConcolic s"], runs,
                       decimals=[None, None, None, None, None, 2, None, None, None, 2]), "",
        "robustlab solves: LPs it solved, fewer than the budget once every (test, uncovered "
        "neuron) pair is tried; DeepConcolic's tests include the adversarial ones."])



def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--oval", default=None, help="checkout of oval-group/statistical-robustness")
    p.add_argument("--wc", default=None, help="checkout of Alexkael/NeurIPS2020_Weight_Correlation")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--particles", type=int, default=2000)
    p.add_argument("--mh-steps", type=int, default=100)
    p.add_argument("--eps", type=float, nargs="*", default=[0.15, 0.2, 0.3])
    p.add_argument("--models", nargs="*", default=["digits-mlp", "digits-cnn"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--deepconcolic", default=None, help="checkout of TrustAI/DeepConcolic")
    p.add_argument("--deepconcolic-python", default=None,
                   help="python of the TensorFlow environment (benchmarks/README.md)")
    p.add_argument("--dc-seeds", type=int, default=1, help="DeepConcolic starts from one")
    p.add_argument("--dc-budgets", type=int, nargs="+", default=[25, 50, 100, 200, 400])
    p.add_argument("--skip", choices=["split", "wc", "dc"], action="append", default=[])
    args = p.parse_args(argv)
    if args.dc_budgets != sorted(set(args.dc_budgets)) or args.dc_budgets[0] < 1:
        p.error("--dc-budgets must be increasing and >= 1")
    if args.repeats < 2:
        p.error("--repeats must be >= 2: agreement is judged against the runs' spread")
    device = torch.device(args.device)
    parts = [("split", "oval", "oval-group/statistical-robustness", "splitting comparison (table 1)",
              lambda path: table_splitting(oval_splitting(path, device), args, device)),
             ("wc", "wc", "Alexkael/NeurIPS2020_Weight_Correlation",
              "complexity comparison (table 2)",
              lambda path: table_complexity(notebook_measures(path), args)),
             ("dc", "deepconcolic", "TrustAI/DeepConcolic", "DeepConcolic comparison (table 3)",
              lambda path: table_deepconcolic(python, path, args))]
    python = dc_python(args.deepconcolic_python)
    for skip, name, repository, what, table in parts:
        if skip in args.skip:
            continue
        path = checkout(getattr(args, name), name)
        if name == "deepconcolic" and path is not None and python is None:
            print("no python of a TensorFlow environment (make bench-deepconcolic, or "
                  "--deepconcolic-python PATH / DEEPCONCOLIC_PYTHON): the DeepConcolic "
                  "comparison (table 3) is skipped\n")
        elif path is None:
            target = "bench-deepconcolic" if name == "deepconcolic" else "bench"
            print(f"{repository} is not checked out (make {target}, or --{name} DIR / "
                  f"{CHECKOUTS[name][0]}): the {what} is skipped\n")
        else:
            print(table(path), "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark robustlab's graph attacks against DeepRobust's Nettack and PGD topology attack.

    python benchmarks/graph_attacks.py [--device cpu|cuda] [--targets 40] [--budgets 1 2 3 5]
                                       [--pgd-budgets B ...] [--steps 100] [--repeats 3]

Both libraries attack the same GCN (`robustlab.graph_models.train_gcn`, seed --seed) on the same
stochastic block model (`robustlab.graph_data.sbm_graph`, seed --seed), evasion only:

- Nettack, direct, edges only, with the degree likelihood-ratio test (cut-off 0.004): the first
  --targets test nodes the GCN classifies right, each at every budget of --budgets. DeepRobust's
  surrogate is a view of the same W1 and W2. Per budget: the share of targets the GCN then
  misclassifies, the mean flips made (robustlab skips a step that would not lower the
  surrogate margin, DeepRobust always flips), the mean surrogate margin after (lower is
  stronger), the share of targets given the same set of flips, and the seconds of each.
- PGD topology attack (Xu et al. 2019), cross-entropy of the test nodes, --steps steps of
  200 / sqrt(t + 1), then 20 Bernoulli draws: test accuracy after the attack at each budget
  of --pgd-budgets (default 5 % and 10 % of the edges), the mean over --repeats seeds (run r
  seeds torch and NumPy with r), flips and seconds. DeepRobust's victim is the same GCN
  reading DeepRobust's normalised adjacency (checked equal to robustlab's logits).

DeepRobust is optional: ``pip install --no-deps deeprobust numba llvmlite`` (its own pins
would pull torchvision and more). Its `targeted_attack` and `global_attack` packages import
every attack at once, some needing torch_scatter or torch_geometric, so the script loads the
two modules it uses by their files (`load_deeprobust`); without DeepRobust it says so, skips
the comparison and runs robustlab's attacks alone.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import pathlib
import sys
import time
import types

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robustlab.attacks import nettack, pgd_topology
from robustlab.attacks.graph import surrogate_logits
from robustlab.graph_data import check_adjacency, sbm_graph
from robustlab.graph_models import gcn_accuracy, train_gcn
from robustlab.tables import markdown_table


def load_deeprobust() -> tuple[dict | None, str | None]:
    """({"Nettack": class, "PGDAttack": class, "utils": module}, None) or (None, why not).

    `deeprobust.graph.targeted_attack` and `.global_attack` import all their attacks in
    their `__init__` (SGA needs torch_scatter, PRBCD torch_geometric): each is registered here
    as a bare package with only its BaseAttack, and the two attack modules imported from it."""
    try:
        import deeprobust.graph as graph
        for pkg in ("targeted_attack", "global_attack"):
            name = f"deeprobust.graph.{pkg}"
            if name not in sys.modules:
                module = types.ModuleType(name)
                module.__path__ = [str(pathlib.Path(graph.__file__).parent / pkg)]
                sys.modules[name] = module
                module.BaseAttack = importlib.import_module(f"{name}.base_attack").BaseAttack
        return {"Nettack": importlib.import_module(
                    "deeprobust.graph.targeted_attack.nettack").Nettack,
                "PGDAttack": importlib.import_module(
                    "deeprobust.graph.global_attack.topology_attack").PGDAttack,
                "utils": importlib.import_module("deeprobust.graph.utils")}, None
    except Exception as e:  # not installed, or numba missing
        for pkg in ("targeted_attack", "global_attack"):  # no half-registered package left
            sys.modules.pop(f"deeprobust.graph.{pkg}", None)
        return None, f"{type(e).__name__}: {e}"


class Surrogate:
    """DeepRobust's view of a GCN for Nettack: gc1.weight (F, H) and gc2.weight (H, K)."""

    def __init__(self, model, graph):
        self.nclass, self.nfeat = graph.num_classes, graph.features.shape[1]
        self.hidden_sizes = [model.layer1.out_features]
        self.gc1 = types.SimpleNamespace(weight=model.layer1.weight.T.detach().cpu())
        self.gc2 = types.SimpleNamespace(weight=model.layer2.weight.T.detach().cpu())


class Victim(nn.Module):
    """robustlab's GCN on a normalised adjacency, log-probabilities out, as DeepRobust's GCN
    (its PGDAttack normalises the adjacency itself and takes nll_loss of the output)."""

    def __init__(self, model, graph):
        super().__init__()
        self.model = model
        self.nclass, self.nfeat = graph.num_classes, graph.features.shape[1]
        self.hidden_sizes = [model.layer1.out_features]

    def forward(self, features, adj_norm):
        return F.log_softmax(self.model.propagate(features, adj_norm), 1)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device):
    _sync(device)
    start = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - start


def _margin(logits, label) -> float:
    other = logits.clone()
    other[label] = -float("inf")
    return float(logits[label] - other.max())


def _check(graph, adjacency, budget) -> int:
    """Flips of a perturbed adjacency, after checking it is a simple graph within budget."""
    a = check_adjacency(adjacency.detach().cpu().double(), "the attack's adjacency")
    flips = int((a != graph.adjacency.cpu()).triu(1).sum())
    if flips > budget:
        raise RuntimeError(f"{flips} flips over the budget {budget}")
    return flips


def deeprobust_nettack(dr, model, graph, target, budget):
    """DeepRobust's Nettack (edges, direct, degree test): perturbed adjacency and flip set."""
    import scipy.sparse as sp
    attack = dr["Nettack"](Surrogate(model, graph), nnodes=graph.n_nodes, attack_structure=True,
                           attack_features=False)
    attack.attack(sp.csr_matrix(graph.features.cpu().numpy()),
                  sp.csr_matrix(graph.adjacency.cpu().numpy()), graph.labels.cpu().numpy(),
                  target, budget, direct=True, ll_cutoff=0.004, verbose=False)
    adjacency = torch.tensor(attack.modified_adj.toarray(), dtype=graph.adjacency.dtype)
    return adjacency.to(graph.adjacency.device), {tuple(sorted(map(int, e)))
                                                  for e in attack.structure_perturbations}


def table_nettack(dr, model, graph, args, device) -> str:
    with torch.no_grad():
        logits = model(graph.features, graph.adjacency)
    right = graph.test[logits[graph.test].argmax(1) == graph.labels[graph.test]]
    targets = right[:args.targets].tolist()
    libs = ["robustlab"] + (["DeepRobust"] if dr else [])
    rows = []
    if dr:  # numba compiles DeepRobust's helpers on the first call: not in the timings
        deeprobust_nettack(dr, model, graph, targets[0], 1)
    for budget in args.budgets:
        stats = {lib: {"success": [], "flips": [], "surrogate": [], "s": 0.0} for lib in libs}
        same = []
        for t in targets:
            label = int(graph.labels[t])
            result, seconds = timed(functools.partial(nettack, model, graph, t, budget=budget,
                                                      features=False), device)
            outs = {"robustlab": (result.adjacency, {tuple(sorted(e)) for e in result.edge_flips},
                                  seconds)}
            if dr:
                (adj, flips), seconds = timed(
                    functools.partial(deeprobust_nettack, dr, model, graph, t, budget), device)
                outs["DeepRobust"] = (adj, flips, seconds)
            for lib, (adj, _, seconds) in outs.items():
                s = stats[lib]
                s["flips"].append(_check(graph, adj, budget))
                with torch.no_grad():
                    s["success"].append(model(graph.features, adj)[t].argmax().item() != label)
                    s["surrogate"].append(_margin(surrogate_logits(model, graph.features, adj)[t],
                                                  label))
                s["s"] += seconds
            if dr:
                same.append(outs["robustlab"][1] == outs["DeepRobust"][1])
        row = [budget, len(targets)]
        for key in ("success", "flips", "surrogate", "s"):
            row += [float(np.mean(stats[lib][key])) if key != "s" else stats[lib]["s"]
                    for lib in libs]
        if dr:
            row += [stats["robustlab"]["s"] / stats["DeepRobust"]["s"], float(np.mean(same))]
        rows.append(row)
    head = ["budget", "targets"]
    for col in ("success", "flips", "surrogate margin", "s"):
        head += [f"{lib} {col}" for lib in libs]
    head += ["time ratio", "same flips"] if dr else []
    return "\n".join([
        f"### Nettack (direct, edges, degree test) on {device.type}: the first {len(targets)} "
        f"test nodes the GCN classifies right", "",
        markdown_table(head, rows, decimals=[None, None] + [3] * (len(head) - 2))])


def deeprobust_pgd(dr, model, graph, budget, steps, seed):
    attack = dr["PGDAttack"](model=Victim(model, graph), nnodes=graph.n_nodes, loss_type="CE",
                             device=graph.adjacency.device.type).to(graph.adjacency.device)
    torch.manual_seed(seed)
    np.random.seed(seed)  # its Bernoulli draws
    attack.attack(graph.features, graph.adjacency, graph.labels, graph.test, budget,
                  epochs=steps)
    return attack.modified_adj


def table_pgd(dr, model, graph, args, device) -> str:
    edges = int(graph.adjacency.triu(1).sum())
    budgets = args.pgd_budgets or [round(0.05 * edges), round(0.10 * edges)]
    libs = ["robustlab"] + (["DeepRobust"] if dr else [])
    notes = []
    if dr:  # the same model: DeepRobust's normalisation fed to robustlab's GCN
        a_norm = dr["utils"].normalize_adj_tensor(graph.adjacency)
        gap = (Victim(model, graph)(graph.features, a_norm)
               - F.log_softmax(model(graph.features, graph.adjacency), 1)).abs().max().item()
        notes.append(f"DeepRobust's victim against robustlab's GCN on the clean graph: largest "
                     f"log-probability difference {gap:.1e}")
    rows = []
    for budget in budgets:
        stats = {lib: {"acc": [], "flips": [], "s": []} for lib in libs}
        for seed in range(args.repeats):
            gen = torch.Generator(device=device).manual_seed(seed)
            result, seconds = timed(functools.partial(
                pgd_topology, model, graph, budget=budget, steps=args.steps, generator=gen), device)
            outs = {"robustlab": (result.adjacency, seconds)}
            if dr:
                try:
                    outs["DeepRobust"] = timed(functools.partial(
                        deeprobust_pgd, dr, model, graph, budget, args.steps, seed), device)
                except UnboundLocalError:  # none of its 20 draws was within the budget
                    notes.append(f"budget {budget}, seed {seed}: DeepRobust kept no sample")
            for lib, (adj, seconds) in outs.items():
                stats[lib]["flips"].append(_check(graph, adj, budget))
                stats[lib]["acc"].append(gcn_accuracy(model, graph, adjacency=adj))
                stats[lib]["s"].append(seconds)
        row = [budget, gcn_accuracy(model, graph)]
        for key in ("acc", "flips", "s"):
            row += [float(np.mean(stats[lib][key])) if stats[lib][key] else None for lib in libs]
        if dr and stats["DeepRobust"]["s"]:
            row.append(np.mean(stats["robustlab"]["s"]) / np.mean(stats["DeepRobust"]["s"]))
        elif dr:
            row.append(None)
        rows.append(row)
    head = ["budget", "clean acc"]
    for col in ("acc after", "flips", "s"):
        head += [f"{lib} {col}" for lib in libs]
    head += ["time ratio"] if dr else []
    return "\n".join([
        f"### PGD topology attack (evasion, {args.steps} steps, CE on the {len(graph.test)} test "
        f"nodes) on {device.type}, {graph.n_nodes} nodes, {edges} edges, mean of "
        f"{args.repeats} seeds", "",
        markdown_table(head, rows, decimals=[None] + [3] * (len(head) - 1)), "", *notes])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0, help="graph and GCN")
    p.add_argument("--targets", type=int, default=40, help="Nettack's target nodes")
    p.add_argument("--budgets", type=int, nargs="+", default=[1, 2, 3, 5])
    p.add_argument("--pgd-budgets", type=int, nargs="+", help="default: 5 %% and 10 %% of edges")
    p.add_argument("--steps", type=int, default=100, help="PGD steps")
    p.add_argument("--repeats", type=int, default=3, help="PGD seeds")
    p.add_argument("--skip", choices=["nettack", "pgd"], action="append", default=[])
    args = p.parse_args(argv)
    if min(args.targets, args.steps, args.repeats, *args.budgets, *(args.pgd_budgets or [1])) < 1:
        p.error("--targets, --steps, --repeats and every budget must be >= 1")
    device = torch.device(args.device)
    dr, why = load_deeprobust()
    if dr is None:
        print(f"DeepRobust is not installed or does not import ({why}): `pip install --no-deps "
              f"deeprobust numba llvmlite` to compare with it; comparison skipped, robustlab's "
              f"attacks alone.\n")
    graph = sbm_graph(seed=args.seed).to(device)
    model = train_gcn(graph, seed=args.seed)
    print(f"GCN on sbm_graph (seed {args.seed}): test accuracy {gcn_accuracy(model, graph):.3f}; "
          f"DeepRobust {'present' if dr else 'absent'}\n")
    if "nettack" not in args.skip:
        print(table_nettack(dr, model, graph, args, device), "\n", flush=True)
    if "pgd" not in args.skip:
        print(table_pgd(dr, model, graph, args, device))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Build and check the model zoo: ``python -m robustlab.zoo build [name ...]`` / ``verify``.

Each recipe trains one architecture of `robustlab.models.ARCHITECTURES` from a fixed seed on
embedded data, saves the state dict under robustlab/weights/ and records its sha256, recipe and
test accuracy in weights/manifest.json, which `robustlab.models.pretrained` checks on load. The
models beyond images (text, reading, graph, point clouds, audio) have their recipes in
`robustlab.zoo_beyond`; both commands cover them too.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import torch

from . import data
from .checkpoint import without_torch_advice
from .models import ARCHITECTURES, MANIFEST, manifest, pretrained, sha256
from .train import cross_entropy, evaluate, fit
from .utils import seed_everything

WEIGHTS_DIR = Path(__file__).parent / "weights"

# Adam with a cosine learning-rate schedule; every recipe fixes its seed in the manifest.
RECIPES = {
    "digits-mlp": dict(dataset="digits", epochs=60, lr=2e-3, batch_size=64, weight_decay=5e-4),
    "digits-cnn": dict(dataset="digits", epochs=60, lr=2e-3, batch_size=64, weight_decay=5e-4),
    "digits-resnet": dict(dataset="digits", epochs=40, lr=2e-3, batch_size=64, weight_decay=5e-4),
    "traffic-cnn": dict(dataset="traffic-lights", epochs=12, lr=2e-3, batch_size=64,
                        weight_decay=5e-4),
    # a standard CNN on the generated 32x32 colour digits: accurate, and not robust at 1-4/255
    "colour-digits-cnn": dict(dataset="colour-digits", epochs=12, lr=2e-3, batch_size=64,
                              weight_decay=5e-4),
    # Robust digits models: `objective` names a factory of robustlab.defences and its arguments
    # (its random draws come from the seeded global RNG); `attack` is the PGD that measures the
    # robust accuracy the manifest records (no random start, so the number is deterministic).
    "digits-cnn-pgd": dict(dataset="digits", epochs=40, lr=2e-3, batch_size=64, weight_decay=5e-4,
                           objective=dict(name="pgd_at", eps=0.15, alpha=0.04, steps=7),
                           attack=dict(eps=0.15, alpha=0.0375, steps=20)),
    "digits-cnn-trades": dict(dataset="digits", epochs=40, lr=2e-3, batch_size=64,
                              weight_decay=5e-4,
                              objective=dict(name="trades", eps=0.15, alpha=0.04, steps=7, beta=6.0),
                              attack=dict(eps=0.15, alpha=0.0375, steps=20)),
    "digits-cnn-noise": dict(dataset="digits", epochs=40, lr=2e-3, batch_size=64,
                             weight_decay=5e-4, objective=dict(name="gaussian_noise", sigma=0.25),
                             attack=dict(eps=0.15, alpha=0.0375, steps=20)),
    # verified training: IBP (Gowal et al. 2018) at eps 0.15, eps and kappa ramped over half the
    # steps after a 10 % clean warm-up; certified at eps 0.1 (tests/test_zoo.py)
    "digits-mlp-ibp": dict(dataset="digits", epochs=100, lr=2e-3, batch_size=64, weight_decay=0.0,
                           objective=dict(name="ibp", eps=0.15, warmup=0.1, ramp=0.5),
                           certified_eps=0.1),
}


def objective_of(recipe: dict, steps: int):
    """The training objective a recipe names (cross-entropy when it names none) for a run of
    `steps` optimiser steps; IBP's warm-up and ramp are given as fractions of them."""
    from . import defences, verify  # built only here: the core layer imports neither

    spec = dict(recipe.get("objective", {"name": "cross_entropy"}))
    name = spec.pop("name")
    if name == "cross_entropy":
        return cross_entropy
    if name == "ibp":
        return verify.ibp(eps=spec["eps"], warmup=int(spec["warmup"] * steps),
                          ramp=int(spec["ramp"] * steps))
    return getattr(defences, name)(**spec)


def pgd_accuracy(model: torch.nn.Module, recipe: dict) -> float | None:
    """Accuracy on the recipe's test set under its `attack` (PGD, no random start), or None."""
    if "attack" not in recipe:
        return None
    from .attacks import pgd

    x, y = data.load(recipe["dataset"], "test")
    x_adv = pgd(model, x, y, random_start=False, **recipe["attack"])
    return evaluate(model, (x_adv, y))


def train_one(name: str, seed: int = 0, progress: bool = True) -> tuple[torch.nn.Module, float]:
    """Train the zoo model `name` from its recipe on the CPU; return it and its test accuracy."""
    recipe = RECIPES[name]
    seed_everything(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    model = ARCHITECTURES[name]()
    train, test = data.load(recipe["dataset"], "train"), data.load(recipe["dataset"], "test")
    opt = torch.optim.Adam(model.parameters(), lr=recipe["lr"], weight_decay=recipe["weight_decay"])
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, recipe["epochs"])
    steps = recipe["epochs"] * -(-len(train[0]) // recipe["batch_size"])
    fit(model, train, epochs=recipe["epochs"], optimizer=opt, scheduler=schedule,
        batch_size=recipe["batch_size"], device="cpu", seed=seed, progress=progress,
        objective=objective_of(recipe, steps))
    return model.eval(), evaluate(model, test)


def build(names, seed: int = 0) -> dict:
    """Train `names`, write their weights and update the manifest; return the new entries."""
    entries = manifest()
    for name in names:
        t0 = time.time()
        model, acc = train_one(name, seed)
        blob = save_weights(model, name)
        entries[name] = {"file": f"{name}.pt", "sha256": sha256(blob), "seed": seed,
                         "test_accuracy": round(acc, 4), "torch": torch.__version__.split("+")[0],
                         **RECIPES[name]}
        robust = pgd_accuracy(model, RECIPES[name])
        if robust is not None:
            entries[name]["pgd_accuracy"] = round(robust, 4)
        print(f"{name}: test accuracy {acc:.4f}"
              + ("" if robust is None else f", PGD accuracy {robust:.4f}")
              + f", {len(blob) / 1024:.0f} KiB, {time.time() - t0:.0f} s", flush=True)
        write_manifest(entries, MANIFEST)
    return entries


def save_weights(model: torch.nn.Module, name: str) -> bytes:
    """Write the state dict of `model` to weights/<name>.pt; return the bytes written."""
    WEIGHTS_DIR.mkdir(exist_ok=True)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    blob = buf.getvalue()
    (WEIGHTS_DIR / f"{name}.pt").write_bytes(blob)
    return blob


def write_manifest(entries: dict, file: str) -> None:
    """Write the manifest `file` in weights/, keys sorted (so a rebuild diffs cleanly)."""
    (WEIGHTS_DIR / file).write_text(json.dumps(entries, indent=2, sort_keys=True) + "\n")


# Accuracies are fractions of a few hundred test images: equal up to rounding the manifest's 4 digits.
ACCURACY_TOL = 1e-3


def same_metric(name: str, label: str, value: float, recorded: float) -> bool:
    """Whether a re-measured metric equals the manifest's within `ACCURACY_TOL`; says so."""
    same = abs(value - recorded) < ACCURACY_TOL
    print(f"{name}: {'ok' if same else label.upper() + ' DIFFERS'} ({label} {value:.4f}, "
          f"manifest {recorded:.4f})")
    return same


def verify() -> bool:
    """Load every zoo model (checksum checked) and compare its accuracy with the manifest;
    then the models beyond images (`robustlab.zoo_beyond.verify`)."""
    from . import zoo_beyond  # it builds on this module

    ok = True
    for name, entry in sorted(manifest().items()):
        try:
            model = pretrained(name)
            acc = evaluate(model, data.load(entry["dataset"], "test"))
            good = same_metric(name, "test accuracy", acc, entry["test_accuracy"])
            if "pgd_accuracy" in entry:  # a robust model: its robust accuracy too
                robust = pgd_accuracy(model, entry)
                good &= same_metric(name, "PGD accuracy", robust, entry["pgd_accuracy"])
        except Exception as e:
            good = False
            print(f"{name}: FAILED: {without_torch_advice(e)}")
        ok &= good
    return zoo_beyond.verify() and ok


def main(argv=None) -> int:
    from . import zoo_beyond

    p = argparse.ArgumentParser(prog="python -m robustlab.zoo", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="train and save zoo models (all by default)")
    b.add_argument("names", nargs="*", choices=[[], *RECIPES, *zoo_beyond.RECIPES], default=[])
    b.add_argument("--seed", type=int, default=0)
    sub.add_parser("verify", help="check every zoo model's checksum and accuracy")
    args = p.parse_args(argv)
    if args.cmd == "build":
        names = args.names or [*RECIPES, *zoo_beyond.RECIPES]
        build([n for n in names if n in RECIPES], args.seed)
        zoo_beyond.build([n for n in names if n in zoo_beyond.RECIPES], args.seed)
        return 0
    return 0 if verify() else 1


if __name__ == "__main__":
    sys.exit(main())

"""Training checkpoints that survive a crash and refuse tampering: the core of ``fit(checkpoint=)``.

A checkpoint is one file written by `torch.save` that holds only tensors and plain containers,
so it loads with ``torch.load(weights_only=True)`` (no pickled code runs on load), and a JSON
sidecar ``<file>.sha256.json`` with its sha256. Saving is a two-step commit, each step atomic:

1. the new checkpoint goes to ``<file>.tmp`` in the same folder and is fsync'ed;
2. the sidecar, naming the new sha256, replaces the old one (temporary file, fsync,
   `os.replace`);
3. ``<file>.tmp`` replaces ``<file>`` (`os.replace`).

A crash before step 2 leaves the previous checkpoint and its sidecar as they were (a leftover
temporary file is ignored and overwritten next time). A crash between steps 2 and 3 leaves a
sidecar naming ``<file>.tmp``'s sha256: `load` then finishes the commit. Any other mismatch is
refused as a corrupt or tampered file, naming it.

RNG states are stored as tensors and lists: torch's CPU (and CUDA) states, NumPy's and
Python's ``random``, the states of the generators of the data loader that shuffles, and those
of the torch generators the objective closes over (``pgd_at(generator=g)`` and every other
factory of ``robustlab.defences`` keep theirs in a closure), so a resumed run draws exactly
what the uninterrupted run would have drawn.
"""

from __future__ import annotations

import functools
import io
import json
import os
import random
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .models import sha256, without_torch_advice

__all__ = ["FORMAT", "capture_rng", "check_classes", "check_rng", "check_same_model",
           "check_same_optimizer", "class_names", "exists", "load", "objective_generators",
           "restore_rng", "save", "sidecar_path", "without_torch_advice"]

FORMAT = "robustlab.fit/1"


def sidecar_path(path: str | os.PathLike) -> Path:
    """Where the sha256 of the checkpoint at `path` is kept."""
    path = Path(path)
    return path.with_name(path.name + ".sha256.json")


def _temp_path(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


def _fsync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_atomic(path: Path, write) -> None:
    """Call ``write(file)`` on a temporary file next to `path`, fsync, then replace `path`."""
    temp = _temp_path(path)
    try:
        with open(temp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def save(path: str | os.PathLike, state: dict) -> str:
    """Save `state` (tensors and plain containers only) to `path` atomically; its sha256.

    The previous checkpoint at `path`, if any, stays intact and loadable until the new one is
    complete on disk; no temporary file is left behind, whether saving succeeds or fails. What
    was written is read back with weights_only=True before it is committed: a state holding
    any other object raises a ValueError here rather than at resume time.
    """
    path = Path(path)
    temp = _temp_path(path)
    committed = False  # once the sidecar names the new file, `load` can finish the rename
    try:
        with open(temp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        blob = temp.read_bytes()
        try:  # refuse now, not at resume time, what could not be loaded back
            torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
        except Exception as err:
            raise ValueError(f"checkpoint {path}: the state holds more than tensors and plain "
                             f"containers, so it would not load with weights_only=True (a "
                             f"scheduler or objective keeping objects in its state?): "
                             f"{without_torch_advice(err)}") from None
        digest = sha256(blob)
        record = {"file": path.name, "sha256": digest, "format": FORMAT}
        _write_atomic(sidecar_path(path),
                      lambda f: f.write((json.dumps(record, indent=1) + "\n").encode()))
        committed = True
        os.replace(temp, path)
    except BaseException:
        if not committed:
            temp.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)
    return digest


def exists(path: str | os.PathLike) -> bool:
    """Whether a checkpoint (or a save that only needs finishing) is at `path`."""
    path = Path(path)
    return path.exists() or sidecar_path(path).exists()


def load(path: str | os.PathLike) -> dict:
    """The checkpoint at `path`, checked against its sha256 and loaded with weights_only=True.

    Raises FileNotFoundError when the checkpoint or its sidecar is missing, and ValueError when
    the sha256 does not match (a corrupt or tampered file) or the file holds anything but
    tensors and plain containers (a pickled object, which weights_only refuses to run).
    """
    path = Path(path)
    side = sidecar_path(path)
    if not side.exists():
        raise FileNotFoundError(f"checkpoint {path} has no checksum file {side.name}: refusing "
                                f"to load an unverified checkpoint")
    try:
        expected = json.loads(side.read_text())["sha256"]
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"checksum file {side} is unreadable: {err}") from None
    temp = _temp_path(path)
    data = path.read_bytes() if path.exists() else None
    if (data is None or sha256(data) != expected) and temp.exists():
        pending = temp.read_bytes()  # a crash between the sidecar and the rename: finish it
        if sha256(pending) == expected:
            os.replace(temp, path)
            _fsync_folder(path.parent)
            data = pending
    if data is None:
        raise FileNotFoundError(f"checkpoint {path} is missing (its checksum file {side.name} "
                                f"is there)")
    if sha256(data) != expected:
        raise ValueError(f"checkpoint {path} fails its sha256 check (corrupt or tampered); "
                         f"expected {expected} from {side.name}")
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError for anything weights_only does not allow
        raise ValueError(f"checkpoint {path} does not load with weights_only=True (it holds "
                         f"more than tensors and plain containers): "
                         f"{without_torch_advice(err)}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"checkpoint {path} is not a robustlab fit checkpoint (format "
                         f"{FORMAT!r})")
    return state


# ---- RNG states as tensors and plain containers (weights_only-loadable) ----

def _loader_generators(batches) -> list[torch.Generator]:
    """The distinct torch generators a DataLoader draws its shuffling (and worker seeds) from."""
    found = []
    for gen in (getattr(batches, "generator", None),
                getattr(getattr(batches, "sampler", None), "generator", None)):
        if isinstance(gen, torch.Generator) and all(gen is not g for g in found):
            found.append(gen)
    return found


def objective_generators(objective, depth: int = 4) -> list[torch.Generator]:
    """The distinct torch generators an objective draws from: those in its closure or among the
    module globals its code names (an objective wrapping another defined at a script's top
    level), in those of the functions found there, and in the arguments of a
    ``functools.partial``, up to `depth` levels deep."""
    found: list[torch.Generator] = []

    def walk(obj, level: int) -> None:
        if isinstance(obj, torch.Generator):
            if all(obj is not g for g in found):
                found.append(obj)
            return
        if level == 0:
            return
        if isinstance(obj, functools.partial):
            for item in (obj.func, *obj.args, *obj.keywords.values()):
                walk(item, level - 1)
        for cell in getattr(obj, "__closure__", None) or ():
            try:
                walk(cell.cell_contents, level - 1)
            except ValueError:  # an empty cell
                pass
        code, names = getattr(obj, "__code__", None), getattr(obj, "__globals__", {})
        for name in getattr(code, "co_names", ()):
            if name in names:
                walk(names[name], level - 1)

    walk(objective, depth)
    return found


def capture_rng(batches=None, objective=None) -> dict:
    """Every RNG state a training run draws from, as tensors and plain containers."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, mt, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": {"version": int(version), "state": torch.tensor(mt, dtype=torch.int64),
                   "gauss_next": gauss_next},
        "loader": [g.get_state() for g in _loader_generators(batches)],
        "objective": [g.get_state() for g in objective_generators(objective)],
    }


def check_rng(rng: dict, batches=None, objective=None) -> None:
    """Refuse RNG states that `restore_rng` could not set on this loader and objective."""
    generators = _loader_generators(batches)
    if len(generators) != len(rng["loader"]):
        raise ValueError(f"the data loader has {len(generators)} shuffling generator(s), the "
                         f"checkpoint {len(rng['loader'])}: resume with data of the same kind")
    if "objective" in rng:  # absent from checkpoints written before it was saved
        generators = objective_generators(objective)
        if len(generators) != len(rng["objective"]):
            raise ValueError(f"the objective draws from {len(generators)} torch generator(s), "
                             f"the checkpoint saved {len(rng['objective'])}: resume with the "
                             f"same objective")


def restore_rng(rng: dict, batches=None, objective=None) -> None:
    """Set every RNG back to the states `capture_rng` returned (checked first: nothing is set
    when the loader or the objective does not match)."""
    check_rng(rng, batches, objective)
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        count = min(len(rng["cuda"]), torch.cuda.device_count())
        for device, state in enumerate(rng["cuda"][:count]):
            torch.cuda.set_rng_state(state, device)
    n = rng["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached"]))
    p = rng["python"]
    random.setstate((p["version"], tuple(p["state"].tolist()), p["gauss_next"]))
    for gen, state in zip(_loader_generators(batches), rng["loader"]):
        gen.set_state(state)
    for gen, state in zip(objective_generators(objective), rng.get("objective", [])):
        gen.set_state(state)


def class_names(**objects) -> dict[str, str | None]:
    """The full class name of each object (None for None), as a checkpoint records them."""
    return {name: None if obj is None else f"{type(obj).__module__}.{type(obj).__qualname__}"
            for name, obj in objects.items()}


def check_classes(state: dict, where, **objects) -> None:
    """Refuse a checkpoint saved with another class of each named object (optimizer=,
    scheduler=), before anything is loaded; `where` names the checkpoint."""
    saved = state.get("classes", {})  # absent from checkpoints written before they were saved
    for name, given in class_names(**objects).items():
        if None not in (given, saved.get(name)) and saved[name] != given:
            raise ValueError(f"resume: checkpoint {where} was saved with the {name} "
                             f"{saved[name]}, and fit was given {name}={given}: resume with the "
                             f"same {name} class")


def check_same_optimizer(optimizer: torch.optim.Optimizer, state_dict: dict, where) -> None:
    """Refuse an optimizer state dict of other parameter groups or unknown options, naming them.

    Options the optimizer does not know (SGD's momentum for Adam, Adam's betas for SGD) tell
    another optimizer even in a checkpoint that did not record its class; options it has and
    the checkpoint lacks are allowed (torch fills in those added by newer versions)."""
    saved, own = state_dict["param_groups"], optimizer.param_groups
    sizes = [len(g["params"]) for g in saved], [len(g["params"]) for g in own]
    if sizes[0] != sizes[1]:
        raise ValueError(f"resume: checkpoint {where}'s optimizer has parameter groups of sizes "
                         f"{sizes[0]}, optimizer's {sizes[1]}: resume with the same optimizer")
    for i, (g, o) in enumerate(zip(saved, own)):
        unknown = sorted(set(g) - set(o))
        if unknown:
            raise ValueError(f"resume: checkpoint {where}'s optimizer has the options {unknown} "
                             f"in parameter group {i}, which optimizer={type(optimizer).__name__}"
                             f" does not have: resume with the same optimizer")


def check_same_model(model: nn.Module, state_dict: dict, where) -> None:
    """Refuse a state dict of another model, naming the differing keys or shapes."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    extra = sorted(set(state_dict) - set(own))
    shapes = [f"{k}: {tuple(state_dict[k].shape)} in the checkpoint, {tuple(own[k].shape)} in "
              f"the model" for k in own if k in state_dict and state_dict[k].shape != own[k].shape]
    if missing or extra or shapes:
        parts = ([f"missing {missing[:5]}"] if missing else []) + \
                ([f"unexpected {extra[:5]}"] if extra else []) + shapes[:5]
        raise ValueError(f"resume: checkpoint {where} is from another model ("
                         f"{'; '.join(parts)})")

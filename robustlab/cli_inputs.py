"""What the command line evaluates: a model (a TorchScript file, a `torch.export` file or a zoo
name) and data (an embedded set or an .npz file), each refused with a `UsageError` naming the
option when it cannot be used, so that ``robustlab`` prints a usage error and no traceback.

Loading is safe: ``torch.jit.load`` and ``torch.export.load`` read their archives without
unpickling arbitrary objects, and .npz files are read with ``allow_pickle=False``.
"""

from __future__ import annotations

import os
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import data, models

EMBEDDED_SETS = ("digits", "traffic-lights", "colour-digits")

# aten operators whose behaviour torch.export fixes at export time, and where their train flag is
TRAIN_FLAG = {"dropout": 2, "feature_dropout": 2, "alpha_dropout": 2, "feature_alpha_dropout": 2,
              "native_dropout": 2, "batch_norm": 5, "_native_batch_norm_legit": 5,
              "native_batch_norm": 5}


class UsageError(ValueError):
    """A command-line value that cannot be used; `option` is the option to name ("--model")."""

    def __init__(self, option: str, message: str):
        super().__init__(message)
        self.option = option


def _first_line(err: BaseException) -> str:
    """The line of an exception's message that says what went wrong: TorchScript's end with it
    ("RuntimeError: ...") after a traceback of the scripted code; others start with it."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    return lines[-1] if lines[0].startswith("The following operation failed") else lines[0]


def _archive_kind(path: Path) -> str | None:
    """"torchscript" or "export" from the entries of a zip archive; None for other archives
    (torch.save's, such as a state dict, hold only data.pkl and tensors)."""
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    if any(name.endswith("/archive_format") or name == "archive_format" for name in names):
        return "export"
    if any("/code/" in name for name in names) and any(n.endswith("/constants.pkl") for n in names):
        return "torchscript"
    return None


def _train_mode_ops(module: nn.Module) -> list[str]:
    """The operators of an exported graph that run in training mode (dropout, batch norm)."""
    found = []
    for node in module.graph.nodes:
        name = getattr(node.target, "__name__", "").split(".")[0]
        index = TRAIN_FLAG.get(name)
        if node.op == "call_function" and index is not None and len(node.args) > index \
                and node.args[index] is True:
            found.append(name)
    return sorted(set(found))


def _exported(path: Path, device: torch.device) -> nn.Module:
    """The module of a `torch.export` file, refused when it was exported in training mode.

    An exported graph cannot switch mode (its ``eval()`` raises): what ran at export time runs
    now, so a graph with train-mode dropout or batch norm is refused rather than evaluated as
    it is; the mode flags are then set to eval so that evaluation code sees an eval-mode model.
    """
    module = torch.export.load(path).module().to(device)
    train_ops = _train_mode_ops(module)
    if train_ops:
        raise UsageError("--model", f"{str(path)!r} was exported in training mode ("
                         f"{', '.join(train_ops)} in training behaviour): call model.eval() "
                         "before torch.export.export")
    for m in module.modules():
        m.training = False
    return module


def _model_file(path: Path, device: torch.device) -> nn.Module:
    """A TorchScript or `torch.export` file as an eval-mode module on `device`."""
    kind = _archive_kind(path) if zipfile.is_zipfile(path) else None
    if kind is None:
        raise UsageError("--model", f"{str(path)!r} is not a TorchScript or torch.export model "
                         "(a state dict or a pickled module is not loaded: save your model with "
                         "torch.jit.script(model).save(FILE) or torch.export.save(program, FILE))")
    try:
        if kind == "torchscript":
            return torch.jit.load(str(path), map_location=device).eval()
        return _exported(path, device)
    except UsageError:
        raise
    except Exception as err:  # noqa: BLE001 - a damaged archive fails in many ways
        raise UsageError("--model", f"{str(path)!r} looks like a {kind} file but does not load: "
                         f"{_first_line(err)}") from None


def load_model(spec: str, device: torch.device) -> nn.Module:
    """The model named by --model, in eval mode on `device`: a file when one exists at `spec`,
    otherwise a zoo model of that name."""
    path = Path(spec)
    if path.is_file():
        return _model_file(path, device)
    if path.exists():
        raise UsageError("--model", f"{spec!r} is not a file")
    zoo = sorted(models.manifest())
    if spec not in zoo:
        raise UsageError("--model", f"{spec!r} is neither an existing file nor a zoo model "
                         f"(zoo models: {', '.join(zoo)})")
    return models.pretrained(spec, device=device).eval()


def _npz_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The arrays x and y of an .npz file, read without pickles."""
    try:
        arrays = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise UsageError("--data", f"{str(path)!r} is not an .npz archive that loads without "
                         f"pickles ({_first_line(err)})") from None
    if not isinstance(arrays, np.lib.npyio.NpzFile):
        raise UsageError("--data", f"{str(path)!r} holds one array, not an .npz archive with "
                         "arrays x and y (np.savez(FILE, x=x, y=y))")
    with arrays:
        missing = [k for k in ("x", "y") if k not in arrays.files]
        if missing:
            raise UsageError("--data", f"{str(path)!r} has no array {' or '.join(missing)} (it "
                             f"has {', '.join(arrays.files) or 'none'}): save it with "
                             "np.savez(FILE, x=x, y=y)")
        try:
            return arrays["x"], arrays["y"]
        except ValueError as err:  # object arrays, which only pickles could read
            raise UsageError("--data", f"{str(path)!r}: {_first_line(err)}") from None


def _checked_arrays(x: np.ndarray, y: np.ndarray, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """x (N, C, H, W) floats in [0, 1] and y (N,) integer labels >= 0, as tensors."""
    if x.ndim != 4 or not np.issubdtype(x.dtype, np.floating):
        raise UsageError("--data", f"x in {where} must be floats of shape (N, C, H, W), got "
                         f"{x.dtype} of shape {x.shape}")
    if not np.isfinite(x).all() or x.min(initial=0.0) < 0 or x.max(initial=0.0) > 1:
        raise UsageError("--data", f"x in {where} must lie in [0, 1] (pixels scaled to [0, 1]), "
                         f"got values in [{np.nanmin(x):g}, {np.nanmax(x):g}]"
                         + (" and non-finite ones" if not np.isfinite(x).all() else ""))
    if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer) or (y < 0).any():
        raise UsageError("--data", f"y in {where} must be {len(x)} integer labels >= 0 of shape "
                         f"({len(x)},), got {y.dtype} of shape {y.shape}")
    if len(x) == 0:
        raise UsageError("--data", f"{where} holds no examples")
    return torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.int64))


def load_data(spec: str, n: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `n` examples (all when None) of an embedded set's test split or an .npz file;
    an `n` beyond them uses all, with a note on stderr."""
    if spec in EMBEDDED_SETS:
        x, y = data.load(spec, "test")
    else:
        path = Path(spec)
        if not path.is_file():
            raise UsageError("--data", f"{spec!r} is neither an embedded set "
                             f"({', '.join(EMBEDDED_SETS)}) nor an existing .npz file")
        x, y = _checked_arrays(*_npz_arrays(path), repr(spec))
    if n is not None and n > len(x):  # as `head -n` would, but not silently
        print(f"note: -n {n} is more than the {len(x)} examples of {spec}: using all {len(x)}",
              file=sys.stderr)
    return x[:n], y[:n]


def check_model_takes(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    """Refuse data the model does not take: one example must give logits (1, K) with K above
    every label."""
    shape = tuple(x[:1].shape)
    try:
        with torch.no_grad():
            out = model(x[:1])
    except Exception as err:  # noqa: BLE001 - whatever the model raises, the data is the cause
        raise UsageError("--data", f"the model does not take inputs of shape {shape} "
                         f"(one example of the data): {_first_line(err)}") from None
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != 1:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UsageError("--model", f"the model must return logits (1, K) for an input of shape "
                         f"{shape}, got {got}")
    if int(y.max()) >= out.shape[1]:
        raise UsageError("--data", f"the labels go up to {int(y.max())} but the model gives "
                         f"{out.shape[1]} logits")


def check_output_path(path: str | None) -> None:
    """Refuse a --json path whose folder does not exist (before any work is done)."""
    if path is not None and not Path(os.path.abspath(path)).parent.is_dir():
        raise UsageError("--json", f"the folder of {path!r} does not exist")

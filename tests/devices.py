"""Run one public method on a device and check it there (issue 16's device-parametrised tests).

A case is a function ``case(device) -> result`` that builds its own inputs on the CPU (seeded,
so every call builds the same), moves model and data to `device`, and runs the method with a
CPU generator where it draws: the reproducible-across-devices mode of the draw rule
(robustlab/_random.py), so a CUDA run draws the same numbers as the CPU's. `check_case` then
asserts, for the result's tensors (found inside tuples, lists, dicts and dataclasses):

- every tensor lies on the input's device, save those the case names as host-side by contract;
- on the CPU, a second run gives identical tensors and numbers (determinism with a seed);
- on CUDA, tensors and numbers equal the CPU run's within the case's tolerance: `atol`, of
  which a fraction `frac` of the elements may fall outside (iterative attacks take signs of
  gradients, and a sign flips where a gradient is ~0 and the two devices sum in another order);
  a case that draws from CUDA's own random stream is compared with a second CUDA run instead.

TF32 is off during the CUDA runs: it rounds float32 matmuls and convolutions to 10 bits, a
difference from the CPU that no tolerance for the method's own logic should have to absorb.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import math
from collections.abc import Callable

import pytest
import torch

from robustlab import data, models

WALL_CLOCK = ("seconds", "time", "elapsed")


@dataclasses.dataclass(frozen=True)
class Case:
    """One method's run: `run(device)`, its tolerance on CUDA, and its host-side outputs."""

    run: Callable[[torch.device], object]
    atol: float = 1e-5
    frac: float = 0.0
    # host-side by contract: True for the whole result, or the ends of the paths (as `leaves`
    # names them, e.g. ".history") of the tensors a method keeps on the CPU on purpose
    host: bool | tuple[str, ...] = ()
    # False for a method that draws from the device's own random stream (a CUDA generator, or
    # the global CUDA RNG): CUDA draws other numbers than the CPU, so a CUDA run is compared
    # with a second CUDA run (determinism) instead of with the CPU's
    across_devices: bool = True


@contextlib.contextmanager
def _exact_float32(device: torch.device):
    """TF32 off on CUDA, deterministic kernels, and the global RNGs seeded (a case without a
    generator then draws the same twice)."""
    torch.manual_seed(0)
    if device.type != "cuda":
        yield
        return
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.backends.cudnn.deterministic)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.deterministic = True
    try:
        yield
    finally:
        (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
         torch.backends.cudnn.deterministic) = saved


def leaves(result, path: str = "result") -> list[tuple[str, object]]:
    """Every tensor and number inside `result`, with where it was found."""
    if isinstance(result, torch.Tensor):
        return [(path, result.detach())]
    if isinstance(result, bool | int | float):
        return [(path, result)]
    if isinstance(result, str):  # a verdict's status is compared; free text (reasons) is not
        return [(path, result)] if "status" in path else []
    if isinstance(result, dict):
        return [x for k, v in result.items() if k not in WALL_CLOCK
                for x in leaves(v, f"{path}[{k!r}]")]
    if isinstance(result, list | tuple):
        return [x for i, v in enumerate(result) for x in leaves(v, f"{path}[{i}]")]
    if dataclasses.is_dataclass(result):  # wall-clock fields differ between any two runs
        return [x for f in dataclasses.fields(result) if f.name not in WALL_CLOCK
                for x in leaves(getattr(result, f.name), f"{path}.{f.name}")]
    if isinstance(result, torch.nn.Module):  # a trained model: its weights
        return [x for k, v in result.state_dict().items() for x in leaves(v, f"{path}.{k}")]
    return []  # None, callables: nothing to compare


def _run(case: Case, device: torch.device):
    with _exact_float32(device):
        return case.run(device)


def _far(a, b, atol: float) -> tuple[int, int]:
    """(how many elements of a and b differ by more than atol, how many there are)."""
    if isinstance(a, torch.Tensor):
        a, b = a.cpu(), b.cpu()
        assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, b.shape, a.dtype, b.dtype)
        if a.dtype == torch.bool or not (a.is_floating_point() or a.is_complex()):
            return int((a != b).sum()), a.numel()
        a, b = a.double(), b.double()
        same = (a == b) | (a - b).abs().le(atol) | (a.isnan() & b.isnan())
        return int((~same).sum()), a.numel()
    if isinstance(a, str):
        return int(a != b), 1
    if isinstance(a, float) and math.isnan(a):
        return int(not math.isnan(b)), 1
    return int(abs(a - b) > atol), 1


def check_case(case: Case, device: str) -> None:
    """Run `case` on `device` and check placement, determinism (CPU) or agreement (CUDA)."""
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA here")
    found = leaves(_run(case, device))
    for where, value in found:
        on_host = case.host is True or where.endswith(tuple(case.host or ()))
        if isinstance(value, torch.Tensor) and not on_host:
            assert value.device.type == device.type, f"{where} on {value.device}, not {device}"
    reference = leaves(_run(case, torch.device("cpu") if case.across_devices else device))
    assert [w for w, _ in found] == [w for w, _ in reference], "the results differ in shape"
    atol, frac = (0.0, 0.0) if device.type == "cpu" else (case.atol, case.frac)
    for (where, value), (_, ref) in zip(found, reference):
        far, total = _far(value, ref, atol)
        assert far <= frac * total, (f"{where}: {far} of {total} elements differ from the CPU's "
                                     f"(or the first CPU run's) by more than {atol}")


@functools.cache
def _cnn_and_digits():
    x, y = data.digits("test")
    return x[:8].clone(), y[:8].clone(), models.pretrained("digits-cnn")


def cnn_setup(device, n: int = 8):
    """A fresh copy of the pretrained digits CNN and the first `n` <= 8 test digits, on `device`."""
    x, y, model = _cnn_and_digits()
    return copy.deepcopy(model).to(device), x[:n].to(device), y[:n].to(device)

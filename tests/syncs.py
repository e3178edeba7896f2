"""Count host synchronisations on the CPU, where a GPU would make the host wait.

On CUDA, reading a value on the host (``.item()``, ``bool(t)``, ``.tolist()``, ``.cpu()``), or
asking for an output whose size depends on the data (``nonzero``, boolean-mask indexing,
``masked_select``, ``unique``), blocks Python until every queued kernel has run. One per batch
costs nothing; one per step of a 1,000-step loop stalls the GPU a thousand times. The CPU has no
such cost, so a test here cannot time it: it counts the calls instead, by wrapping them for the
duration of a ``with HostSyncs() as s:`` block, and records where each came from.

Reads of torch.optim's own step counters are left out (CPU tensors even beside a GPU).
Use ``s.total`` for the count and ``s.sites()`` (file:line -> count, inside robustlab only) to
name the culprits in an assertion message. ``grows(run, small, large)`` runs a method at two step
or query counts and returns both counts with their sites: an iterative method is sync-free in
its loop when the two are equal.
"""

from __future__ import annotations

import collections
import sys
import traceback
from collections.abc import Callable

import torch

_TENSOR_METHODS = ("item", "tolist", "cpu", "numpy", "nonzero", "__bool__", "__float__", "__int__",
                   "__index__", "masked_select", "unique", "argwhere")
_TORCH_FUNCTIONS = ("nonzero", "masked_select", "unique", "argwhere", "is_nonzero")


def _is_mask(index) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in items)


class HostSyncs:
    """Context manager: counts the host-synchronising tensor calls made inside it."""

    def __init__(self):
        self.calls: list[tuple[str, str]] = []  # (what, first robustlab frame "file:line")
        self._saved: list[tuple[object, str, object]] = []
        self._depth = 0

    @property
    def total(self) -> int:
        return len(self.calls)

    def sites(self) -> dict[str, int]:
        """`what @ file:line` -> count, for the calls made from inside robustlab."""
        return dict(collections.Counter(f"{what} @ {site}" for what, site in self.calls
                                        if site))

    def _record(self, what: str) -> None:
        stack = traceback.extract_stack()[:-2]
        # torch.optim keeps its step counters in CPU tensors (unless capturable or fused) so that
        # reading them never waits for a GPU: not a sync, though the CPU cannot tell it apart
        if any("/torch/optim/" in f.filename.replace("\\", "/") for f in stack):
            return
        site = ""
        for frame in reversed(stack):
            if "/robustlab/" in frame.filename.replace("\\", "/"):
                site = f"{frame.filename.rsplit('robustlab/', 1)[-1]}:{frame.lineno}"
                break
        self.calls.append((what, site))

    def _wrap(self, owner, name: str, *, only_masks: bool = False) -> None:
        original = getattr(owner, name)

        def counted(*args, **kwargs):
            # A wrapped call that makes another (nonzero inside a mask index) counts once.
            if self._depth == 0 and (not only_masks or _is_mask(args[1])):
                self._record(name)
            self._depth += 1
            try:
                return original(*args, **kwargs)
            finally:
                self._depth -= 1

        self._saved.append((owner, name, original))
        setattr(owner, name, counted)

    def __enter__(self) -> HostSyncs:
        for name in _TENSOR_METHODS:
            self._wrap(torch.Tensor, name)
        for name in _TORCH_FUNCTIONS:
            self._wrap(torch, name)
        self._wrap(torch.Tensor, "__getitem__", only_masks=True)
        self._wrap(torch.Tensor, "__setitem__", only_masks=True)
        return self

    def __exit__(self, *exc) -> None:
        for owner, name, original in reversed(self._saved):
            setattr(owner, name, original)
        self._saved.clear()


def count(fn: Callable[[], object]) -> HostSyncs:
    """Run ``fn()`` and return its HostSyncs record."""
    with HostSyncs() as s:
        fn()
    return s


def grows(run: Callable[[int], object], small: int, large: int) -> tuple[HostSyncs, HostSyncs]:
    """``run(n)`` at two step or query counts; returns both records (equal totals: sync-free)."""
    return count(lambda: run(small)), count(lambda: run(large))


def explain(a: HostSyncs, b: HostSyncs) -> str:
    """A message naming the sites whose count grew from record `a` to record `b`."""
    sa, sb = a.sites(), b.sites()
    grew = {k: (sa.get(k, 0), v) for k, v in sb.items() if v > sa.get(k, 0)}
    lines = [f"  {k}: {n0} -> {n1}" for k, (n0, n1) in sorted(grew.items())]
    return f"host syncs grew {a.total} -> {b.total}:\n" + "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover - a quick look: python -m tests.syncs
    x = torch.rand(3)
    with HostSyncs() as s:
        x.item() if x.numel() == 1 else x.sum().item()
        bool(x[0] > 0.5)
        x[x > 0.5]
    print(s.total, s.sites(), file=sys.stderr)

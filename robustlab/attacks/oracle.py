"""The black-box query interface: an Oracle that counts queries, and a per-call QueryLedger.

Black-box attacks (ZOO, Square, HopSkipJump, the one-pixel attack) see the model only through
an Oracle and spend at most `max_queries` model evaluations per example. Every one of them
returns ``(x_adv, queries)``: x_adv as any attack's (shape, dtype and device of x), and queries
an (N,) long tensor on x's device with what each example of the batch cost in this call (not
what an Oracle passed in had counted before). ``QueryLedger.result`` builds that pair.

On a GPU an attack's loop must not wait on the host (issue 16): a caller's query is checked
(images in [0, 1], indices) and charged on the CPU, but an attack checks its inputs once, on
entry, and then asks through its QueryLedger, whose counts stay on x's device until `result`.
Its loops keep a fixed working set of examples between the few checkpoints of `segments`,
with masks for those that have stopped: their images are evaluated but never charged
(``Oracle.discarded`` counts them), and their answers are not used.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._checks import check_choice, check_eps, check_images, check_labels, check_norm, check_positive
from .._model import check_model, eval_mode, logits_of, model_device, model_dtype, plain
from ..losses import is_fooled

OUTPUTS = ("scores", "label")


class QueryBudgetError(RuntimeError):
    """An example asked the Oracle for more queries than its budget allows."""


def _infer_num_classes(model: nn.Module) -> int:
    for m in reversed(list(model.modules())):  # the classifier head is the last linear layer
        if isinstance(getattr(m, "out_features", None), int):
            return m.out_features
    raise ValueError("cannot tell how many classes the model has (no layer with out_features): "
                     "pass Oracle(model, num_classes=K)")


class Oracle:
    """Query access to a classifier that returns softmax scores or only the top-1 label.

    A query is one image evaluated. ``oracle(images, idx)`` evaluates ``images`` (B, C, H, W) in
    [0, 1] on behalf of examples ``idx`` (B,) (default 0..B-1), charges one query to each, and
    returns probabilities (B, K) or labels (B,). Counts accumulate per example index until
    ``reset()``: ``count(idx)`` reads them, ``seen`` lists the indices met so far (the memory
    taken grows with them, not with the largest index) and ``queries`` is the dense view of
    examples 0..max(seen). A call that would take an example past ``budget`` raises
    QueryBudgetError and evaluates nothing. The model runs in eval mode under torch.no_grad(),
    and its modes, parameters and gradients are as they were afterwards. Attacks use the two
    halves of a call apart: ``answer`` (the model's output, unchecked) and ``charge``.

    What an attacker may know without a query is explicit: ``device`` and ``dtype`` (where and
    in which precision images must be), and ``num_classes`` (K).

    Arguments:
        model: the classifier, returning logits (N, K).
        output: "scores" (softmax probabilities) or "label" (the top-1 class only).
        budget: the most queries per example, or None for no limit.
        batch_size: images per forward pass.
        num_classes: K; by default the out_features of the model's last linear layer.
    """

    def __init__(self, model: nn.Module, *, output: str = "scores", budget: int | None = None,
                 batch_size: int = 1024, num_classes: int | None = None):
        check_model(model)
        self.output = check_choice(output, OUTPUTS, "output")
        self.budget = None if budget is None else check_positive(budget, "budget", integer=True)
        self.batch_size = check_positive(batch_size, "batch_size", integer=True)
        self.num_classes = (_infer_num_classes(model) if num_classes is None
                            else check_positive(num_classes, "num_classes", integer=True))
        self.device, self.dtype = model_device(model), model_dtype(model)
        self.model = model
        self.reset()

    def reset(self) -> None:
        """Forget every query made so far."""
        # one count per example index seen, the indices sorted: memory grows with the examples
        # seen, not with the largest index (a dense tensor up to index 10**8 took 800 MB)
        self.seen = torch.zeros(0, dtype=torch.long)
        self._counts = torch.zeros(0, dtype=torch.long)
        self._discarded = 0

    @property
    def queries(self) -> torch.Tensor:
        """The counts of examples 0..m as one tensor, m the largest index seen (0 for an index
        never charged). It is as long as m + 1: for scattered large indices ask ``count(idx)``."""
        dense = self._counts.new_zeros(self.seen[-1].item() + 1 if len(self.seen) else 0)
        dense[self.seen] = self._counts
        return dense

    def count(self, idx: torch.Tensor) -> torch.Tensor:
        """The queries examples `idx` have made so far, as CPU longs."""
        return self._lookup(self._check_idx(idx))

    def remaining(self, n: int) -> torch.Tensor:
        """Queries examples 0..n-1 may still make (2**62 without a budget)."""
        idx = torch.arange(n)
        self._admit(idx)
        return (2 ** 62 if self.budget is None else self.budget) - self._lookup(idx)

    def _lookup(self, idx: torch.Tensor) -> torch.Tensor:
        """The counts of checked CPU indices `idx`, 0 for an example not seen."""
        if not len(self.seen):
            return torch.zeros_like(idx)
        pos = torch.searchsorted(self.seen, idx).clamp(max=len(self.seen) - 1)
        return torch.where(self.seen[pos] == idx, self._counts[pos], 0)

    def _admit(self, idx: torch.Tensor) -> None:
        """Give the examples `idx` not seen yet a count of 0."""
        new = torch.unique(idx[~torch.isin(idx, self.seen)])
        if len(new):
            self.seen, order = torch.sort(torch.cat([self.seen, new]))
            self._counts = torch.cat([self._counts, self._counts.new_zeros(len(new))])[order]

    def _check_idx(self, idx, n: int | None = None) -> torch.Tensor:
        """`idx` as CPU longs, checked: integer example indices >= 0, `n` of them if given."""
        if idx is None:
            return torch.arange(n)
        if not isinstance(idx, torch.Tensor) or idx.is_floating_point() or idx.dtype == torch.bool:
            raise TypeError(f"idx must be an integer tensor of example indices, got "
                            f"{getattr(idx, 'dtype', type(idx).__name__)}")
        if idx.dim() != 1 or (n is not None and len(idx) != n):
            raise ValueError(f"idx must have shape ({'B' if n is None else n},), got {tuple(idx.shape)}")
        idx = idx.cpu().long()
        if len(idx) and (lo := idx.min().item()) < 0:
            raise ValueError(f"idx holds a negative example index: {lo}")
        return idx

    def check_inputs(self, x, y, *, eps=None, norm="linf", norms=("linf", "l2")):
        """Validate an attack's ``(x, y, eps, norm)`` against what the Oracle says of its model."""
        x = plain(check_images(x))
        if self.device is not None and x.device != self.device:
            raise ValueError(f"x is on {x.device} but the model is on {self.device}; move one of them")
        if self.dtype is not None and x.dtype != self.dtype:
            raise TypeError(f"x has dtype {x.dtype} but the model's parameters are {self.dtype}; "
                            f"convert one of them (e.g. x.to({self.dtype}))")
        y = check_labels(y, x, self.num_classes)
        eps = check_eps(eps) if eps is not None else None
        return x, y, eps, check_norm(norm, norms)

    def __call__(self, images: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        images = check_images(images, "images")
        self.charge(self._check_idx(idx, len(images)))
        return self.answer(images)

    def charge(self, idx: torch.Tensor, counts: torch.Tensor | None = None) -> None:
        """Charge `counts` queries (default 1 each) to the checked CPU example indices `idx`;
        QueryBudgetError, charging nothing, if that takes an example past the budget."""
        counts = torch.ones_like(idx) if counts is None else counts
        examples, inverse = torch.unique(idx, return_inverse=True)
        charge = torch.zeros_like(examples).index_add_(0, inverse, counts)
        self._admit(examples)
        pos = torch.searchsorted(self.seen, examples)
        total = self._counts[pos] + charge
        over = total > (math.inf if self.budget is None else self.budget)
        if over.any():
            raise QueryBudgetError(f"query budget of {self.budget} per example exceeded for "
                                   f"example(s) {examples[over][:10].tolist()}")
        self._counts[pos] = total

    def answer(self, images: torch.Tensor) -> torch.Tensor:
        """The model's scores or labels on `images`, unchecked and uncharged: the path of an
        attack whose inputs were checked on entry (through a QueryLedger, which charges)."""
        with eval_mode(self.model), torch.no_grad():
            z = torch.cat([logits_of(self.model, b) for b in images.split(self.batch_size)])
        if z.shape[1] != self.num_classes:
            raise ValueError(f"the model returned {z.shape[1]} classes but the Oracle was told "
                             f"num_classes={self.num_classes}")
        return z.softmax(1) if self.output == "scores" else z.argmax(1)

    @property
    def discarded(self) -> int:
        """Images the model evaluated for attacks without charging anyone: rows of a batch whose
        example had stopped (fooled, or out of budget), whose answers the attack did not use."""
        return int(self._discarded)


def as_oracle(model: nn.Module | Oracle, output: str, max_queries: int) -> Oracle:
    """The caller's Oracle, or a fresh one over `model` with budget `max_queries`."""
    check_positive(max_queries, "max_queries", integer=True)
    if not isinstance(model, Oracle):
        return Oracle(model, output=output, budget=max_queries)
    if output == "scores" and model.output != "scores":
        raise ValueError("this attack needs confidence scores: pass an Oracle with output='scores'")
    return model


# Where a loop may look at the host: after 1/8192, 1/4096, ..., 1/2 of its iterations. A loop over
# n iterations checks whether anything is left to do (and shrinks its working set to what is)
# len(CHECKS) + 1 times whatever n is, and runs at most about twice the iterations it needed.
CHECKS = tuple(2.0 ** -j for j in range(13, 0, -1))


def segments(n: int) -> list[range]:
    """Iterations 0..n-1 cut at the fractions CHECKS of n: always len(CHECKS) + 1 ranges (some
    empty), so a loop that syncs once per range syncs the same number of times at any n."""
    cuts = [0, *(math.ceil(n * f) for f in CHECKS), n]
    return [range(a, b) for a, b in zip(cuts, cuts[1:])]


class QueryLedger:
    """What one attack call has spent, and may still spend, per example of its batch `x`.

    The attack's inputs are checked once, on entry (``Oracle.check_inputs``); its queries then
    go through `ask`, which neither checks them again nor reads anything back to the host: the
    counts of this call stay on x's device (`spent`) and reach the Oracle's own ledger in
    `result`, with one copy. A GPU runs a loop of queries without waiting on the host.
    """

    def __init__(self, oracle: Oracle, x: torch.Tensor, y: torch.Tensor, max_queries: int):
        n = len(x)
        self.oracle, self.y, self.device, self.shape = oracle, y, x.device, x.shape[1:]
        self.idx = torch.arange(n)  # the batch's examples in the Oracle's ledger (CPU)
        self.allowed = oracle.remaining(n).clamp(max=max_queries).to(x.device)
        self.spent = torch.zeros(n, dtype=torch.long, device=x.device)

    def used(self) -> torch.Tensor:
        """Queries (N,) each example has spent in this call, on x's device."""
        return self.spent.clone()

    def left(self) -> torch.Tensor:
        """Queries (N,) each example may still spend in this call, on x's device."""
        return self.allowed - self.spent

    def active(self, todo: torch.Tensor, cost: int = 1) -> torch.Tensor:
        """The examples (indices on x's device) with `todo` set that can pay `cost` queries.

        One host sync: loops call it only at the starts of `segments`."""
        return (todo & (self.left() >= cost)).nonzero()[:, 0]

    def ask(self, images: torch.Tensor, rows: torch.Tensor, live: torch.Tensor | None = None
            ) -> torch.Tensor:
        """The Oracle's answer on `images`, a whole number of images per entry of `rows`.

        Arguments:
            images: (len(rows) * m, C, H, W), the m images of rows[0] first, and so on.
            rows: (A,) distinct example indices of the batch, on x's device.
            live: (A,) bool, which rows pay for their m images (default: all). The others are
                evaluated too, since a GPU works on the whole batch, but charged nothing: their
                answers must not be used (`Oracle.discarded` counts them).
        """
        per_row = len(images) // len(rows)
        out = self.oracle.answer(images)
        self.pay(rows, torch.full_like(rows, per_row) if live is None else live.long() * per_row,
                 len(images))
        return out

    def pay(self, rows: torch.Tensor, counts: torch.Tensor, evaluated: int) -> None:
        """Charge `counts` (A,) queries to the distinct example indices `rows` (A,), for a batch
        of `evaluated` images; the images nobody pays for count as the Oracle's `discarded`."""
        self.spent[rows] += counts
        self.oracle._discarded = self.oracle._discarded + (evaluated - counts.sum())

    def fooled(self, images: torch.Tensor, rows: torch.Tensor, targeted: bool,
               live: torch.Tensor | None = None) -> torch.Tensor:
        """phi(x') of HopSkipJump: is the label of each image wrong (or the target)?"""
        out = self.ask(images, rows, live)
        y = self.y[rows].repeat_interleave(len(images) // len(rows))
        return is_fooled(out if out.dim() == 1 else out.argmax(1), y, targeted)

    def result(self, x_adv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What every black-box attack returns: ``(x_adv, queries)``, queries (N,) long on
        x's device, what each example cost in this call; the Oracle's ledger is charged here."""
        self.oracle.charge(self.idx, self.spent.cpu())
        return x_adv, self.used()


def log_scores(p: torch.Tensor) -> torch.Tensor:
    """log p in float64, with p = 0 kept finite: attacks compare log-probability margins."""
    return p.double().clamp_min(1e-300).log()

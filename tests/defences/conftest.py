"""What the defence tests share: the PGD that measures robust accuracy and the standard-training
baseline each defence must beat."""

import functools

from robustlab import data, models, seed_everything
from robustlab.attacks import pgd
from robustlab.train import evaluate, fit

from ..conftest import seeded


def pgd_accuracy(model, x, y, eps=0.1):
    """Accuracy under 20 steps of PGD at `eps` (L-inf, step 0.01, a seeded random start)."""
    x_adv = pgd(model, x, y, eps=eps, alpha=0.01, steps=20, generator=seeded(0))
    return evaluate(model, (x_adv, y))


@functools.cache
def standard_pgd_accuracy(seed: int) -> float:
    """PGD accuracy on the digits test set of the MLP every defence test trains, trained
    for 10 epochs with plain cross-entropy (measured about 0.50)."""
    seed_everything(seed)
    model = models.MLP((1, 8, 8), (64,), 10)
    fit(model, data.digits("train"), epochs=10, lr=3e-3, progress=False)
    return pgd_accuracy(model, *data.digits("test"))

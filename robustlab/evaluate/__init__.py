"""Measuring attacks and robustness: robust-accuracy curves, an AutoAttack-style ensemble,
distortion and query statistics, one comparison table of many attacks, the transfer
matrix of an attack between models, and input-transformation defences under naive and adaptive
attacks (Athalye et al.'s table: break_transforms).

Everything here is a plain function over pixel-space batches ``(x, y)`` and returns a small
result object with a ``.table()`` (markdown text, from `markdown_table`) so a lesson can print
it as it is. Models are evaluated in eval mode and left as found.

An attack given to these functions is a callable. `robust_accuracy` calls
``attack(model, x, y, eps=eps, **attack_kwargs)`` for each budget; `worst_case` and
`compare_attacks` call ``attack(model, x, y)`` (bind the budget with a lambda or
``functools.partial``). Every black-box attack returns ``(x_adv, queries)``
(`robustlab.attacks.oracle`); all three accept that pair as well as a bare x_adv, and
`compare_attacks` reports the queries. An attack that returns NaN is refused with an error
naming it.
"""

from ..tables import Tabular, markdown_table
from .accuracy import Attack, RobustCurve, check_adversarial, robust_accuracy, robust_mask
from .adaptive import TransformBreak, break_transforms, is_random
from .compare import Comparison, compare_attacks
from .ensemble import WorstCase, budget_results, default_attacks, worst_case
from .geometry import jacobian_norms, weight_landscape
from .presets import PRESETS
from .stats import PGDDistortion, distortion_stats, pgd_distortion, query_stats
from .transfer import TransferResult, transfer_matrix

__all__ = ["PRESETS", "Attack", "Comparison", "RobustCurve", "Tabular", "TransferResult",
           "WorstCase",
           "check_adversarial", "compare_attacks", "default_attacks", "distortion_stats",
           "markdown_table", "query_stats", "robust_accuracy", "robust_mask", "transfer_matrix",
           "worst_case"]
__all__ += ["TransformBreak", "break_transforms", "is_random"]
__all__ += ["jacobian_norms", "weight_landscape"]
__all__ += ["budget_results"]
__all__ += ["PGDDistortion", "pgd_distortion"]
from .saliency import SaliencyScores, deletion_insertion, input_saliency, saliency_alignment  # noqa: E402
from .theory import (  # noqa: E402
    linear_accuracy_schmidt,
    linear_accuracy_tsipras,
    linear_robust_fit,
    mean_classifier,
    schmidt_data,
    tsipras_bayes,
    tsipras_bound,
    tsipras_data,
)

__all__ += ["SaliencyScores", "deletion_insertion", "input_saliency", "saliency_alignment"]
__all__ += ["linear_accuracy_schmidt", "linear_accuracy_tsipras", "linear_robust_fit", "mean_classifier",
            "schmidt_data", "tsipras_bayes", "tsipras_bound", "tsipras_data"]

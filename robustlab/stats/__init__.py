"""Statistical evaluation of networks (the tutorial's verification approach 2): structural
coverage criteria of a test set (`coverage`), complexity measures that predict generalisation
(`complexity`, `generalisation`) and Kendall's rank correlation of a measure with the generalisation gap
(`kendall`).

`robustlab.stats.coverage` stays the module (``stats.coverage.neuron_coverage(model, x,
threshold=...)``); its dispatcher is ``stats.coverage.coverage(model, x, criterion, ...)``.
"""

from . import complexity, coverage, generalisation
from .complexity import measures
from .coverage import Coverage, Profile, neuron_coverage
from .kendall import KendallResult, KendallTable, kendall, kendall_table

__all__ = ["Coverage", "KendallResult", "KendallTable", "Profile", "complexity", "coverage", "generalisation",
           "kendall", "kendall_table", "measures", "neuron_coverage"]

"""Statistical evaluation of networks (the tutorial's verification approach 2): CLEVER scores
(`clever`), the probability of a rare misclassification under input noise (`splitting`: naive
Monte Carlo and adaptive multi-level splitting), structural coverage criteria of a test set
(`coverage`), complexity measures that predict generalisation (`complexity`, `generalisation`)
and Kendall's rank correlation of a measure with the generalisation gap (`kendall`; the whole
of the tutorial's Table 2 on networks trained here: `rank_networks`).

`robustlab.stats.coverage` stays the module (``stats.coverage.neuron_coverage(model, x,
threshold=...)``); its dispatcher is ``stats.coverage.coverage(model, x, criterion, ...)``.
"""

from . import complexity, coverage, generalisation
from .clever import Clever, clever
from .complexity import measures
from .coverage import Coverage, Profile, neuron_coverage
from .kendall import KendallResult, KendallTable, kendall, kendall_table
from .ranking import Ranking, rank_networks
from .splitting import MonteCarlo, Splitting, monte_carlo, splitting
from .testing import Testing, concolic, fuzz, random_testing

__all__ = ["Clever", "Coverage", "KendallResult", "KendallTable", "MonteCarlo", "Profile", "Splitting",
           "Testing", "clever", "complexity", "concolic", "coverage", "fuzz", "generalisation",
           "kendall", "kendall_table", "measures", "monte_carlo", "neuron_coverage",
           "random_testing", "splitting"]
__all__ += ["Ranking", "rank_networks"]

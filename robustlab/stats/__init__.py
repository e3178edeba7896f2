"""Statistical evaluation of networks (the tutorial's verification approach 2): complexity
measures that predict generalisation (`complexity`) and Kendall's rank correlation of a measure
with the generalisation gap (`kendall`)."""

from . import complexity
from .complexity import measures
from .kendall import KendallResult, KendallTable, kendall, kendall_table

__all__ = ["KendallResult", "KendallTable", "complexity", "kendall", "kendall_table", "measures"]

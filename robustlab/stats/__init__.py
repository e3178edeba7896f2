"""Statistical evaluation of networks (the tutorial's verification approach 2): Kendall's rank
correlation of complexity measures with the generalisation gap."""

from .kendall import KendallResult, KendallTable, kendall, kendall_table

__all__ = ["KendallResult", "KendallTable", "kendall", "kendall_table"]

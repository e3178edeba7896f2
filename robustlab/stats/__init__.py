"""Statistical evaluation: CLEVER scores (clever) and the probability of a rare
misclassification under input noise (splitting: naive Monte Carlo and adaptive multi-level
splitting)."""

from .clever import Clever, clever

__all__ = ["Clever", "clever"]

"""Statistical evaluation: CLEVER scores (clever) and the probability of a rare
misclassification under input noise (splitting: naive Monte Carlo and adaptive multi-level
splitting)."""

from .clever import Clever, clever
from .splitting import MonteCarlo, Splitting, monte_carlo, splitting

__all__ = ["Clever", "MonteCarlo", "Splitting", "clever", "monte_carlo", "splitting"]

"""robustlab: attacks, defences, verification and statistical evaluation of neural networks.

The library behind the robustlab course, after Ruan, Yi and Huang, "Adversarial Robustness of
Deep Learning: Theory, Algorithms, and Applications". Images are pixel-space tensors in [0, 1]
of shape (N, C, H, W); models return logits (N, K).
"""

from . import attacks, data, defences, evaluate, models, stats, train, verify
from .utils import default_device, generator, report, seed_everything

__version__ = "0.1.0"
__all__ = ["attacks", "data", "defences", "evaluate", "default_device", "generator", "models",
           "report", "seed_everything", "stats", "train", "verify"]

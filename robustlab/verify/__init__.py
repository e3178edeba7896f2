"""Verification: bounds on a network's outputs over a norm ball, and complete verifiers.

types (Bounds, Verdict, margin_spec), network (read_network: the one chain of layers every
verifier reads), interval (IBP), crown (CROWN / DeepPoly back-substitution), milp
(the exact big-M MILP, solved with HiGHS), distortion (min_distortion: the exact minimal
adversarial distortion), reluplex (ReLU case splitting over LPs), bab (branch and bound over
CROWN bounds).
"""

from .bab import branch_and_bound
from .crown import crown
from .distortion import MinDistortion, min_distortion
from .interval import interval
from .milp import milp
from .network import Network, read_network
from .reluplex import reluplex
from .types import Bounds, Verdict, margin_spec

__all__ = ["Bounds", "MinDistortion", "Network", "Verdict", "branch_and_bound", "crown", "interval",
           "margin_spec", "milp", "min_distortion", "read_network", "reluplex"]

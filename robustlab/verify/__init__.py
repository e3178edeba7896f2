"""Verification: bounds on a network's outputs over a norm ball, and complete verifiers.

types (Bounds, Verdict, margin_spec), network (read_network: the one chain of layers every
verifier reads), interval (IBP), crown (CROWN / DeepPoly back-substitution), milp
(the exact big-M MILP, solved with HiGHS).
"""

from .crown import crown
from .interval import interval
from .milp import milp
from .network import Network, read_network
from .types import Bounds, Verdict, margin_spec

__all__ = ["Bounds", "Network", "Verdict", "crown", "interval", "margin_spec", "milp",
           "read_network"]

from .reach import reach, reach_box  # noqa: E402

__all__ += ["reach", "reach_box"]

from .deepgo import AnytimeBounds, deepgo, lipschitz_minimise  # noqa: E402

__all__ += ["AnytimeBounds", "deepgo", "lipschitz_minimise"]

from .training import crown_ibp, ibp, linear_ramp, verified_margins, worst_logits  # noqa: E402

__all__ += ["crown_ibp", "ibp", "linear_ramp", "verified_margins", "worst_logits"]

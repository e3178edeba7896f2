"""Verification: bounds on a network's outputs over a norm ball, and complete verifiers.

types (Bounds, Verdict, margin_spec), network (read_network: the one chain of layers every
verifier reads, refusing what it cannot read exactly), rounding (the model's float error and
the check that what was read is what runs), interval (IBP), crown (CROWN / DeepPoly back-substitution), milp
(the exact big-M MILP, solved with HiGHS), distortion (min_distortion: the exact minimal
adversarial distortion), reluplex (ReLU case splitting over LPs), bab (branch and bound over
CROWN bounds), reach (Xiang et al.'s hyper-rectangles with input partitioning), deepgo (anytime
Lipschitz bounds), training (IBP and CROWN-IBP objectives for `train.fit`).
"""

from .bab import branch_and_bound
from .crown import crown
from .deepgo import AnytimeBounds, deepgo, lipschitz_minimise
from .distortion import MinDistortion, min_distortion
from .interval import interval
from .milp import milp
from .network import Network, read_network
from .reach import reach, reach_box
from .reluplex import reluplex
from .rounding import read_exact, rounding_bound, unit_roundoff
from .training import crown_ibp, ibp, linear_ramp, verified_margins, worst_logits
from .types import Bounds, Verdict, margin_spec

__all__ = ["AnytimeBounds", "Bounds", "MinDistortion", "Network", "Verdict", "branch_and_bound",
           "crown", "crown_ibp", "deepgo", "ibp", "interval", "linear_ramp", "lipschitz_minimise",
           "margin_spec", "milp", "min_distortion", "reach", "reach_box", "read_exact", "read_network",
           "reluplex", "rounding_bound", "unit_roundoff", "verified_margins", "worst_logits"]

# properties over input regions (properties.py): exact MILP checks of C f(x) + d > 0 on a box
from .properties import never_class, verify_monotone, verify_property  # noqa: E402

__all__ += ["never_class", "verify_monotone", "verify_property"]

# abstraction (abstraction.py): Prabhakar & Afzal's interval neural networks and refinement
from .abstraction import IntervalNetwork, Refinement, abstract, abstract_bounds, refine  # noqa: E402

__all__ += ["IntervalNetwork", "Refinement", "abstract", "abstract_bounds", "refine"]

# incremental re-verification (incremental.py): previous verdicts as a sound warm start
from .incremental import Reverification, reverify  # noqa: E402

__all__ += ["Reverification", "reverify"]

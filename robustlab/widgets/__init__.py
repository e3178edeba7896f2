"""Interactive widgets for the lessons (ipywidgets + matplotlib).

Each builder returns an ipywidgets container whose controls are attributes (``.eps``,
``.index``, ...) and whose latest result is in ``.state``, so a test can drive it headless by
setting ``.value`` and reading ``.state``. One module per part of the course: figures (drawing
helpers), attacks, defences (and defences_more, lesson 03c's), verify, stats.
"""

from .attacks import (
    EPS_RANGES,
    SWEEP_MAX,
    UNTARGETED,
    attack_explorer,
    black_box_attacks,
    eps_sweep,
    epsilon_explorer,
    explorer_attacks,
    query_explorer,
)
from .defences import defence_curves, smoothing_radii
from .defences_more import defence_budgets
from .figures import (
    DRAWING,
    adversarial_figure,
    grid_step,
    image_row,
    interactive,
    one_at_a_time,
    show_image,
    show_perturbation,
)
from .stats import clever_explorer, draw_clever
from .verify import draw_output_bounds, reach_explorer

__all__ = ["DRAWING", "EPS_RANGES", "SWEEP_MAX", "UNTARGETED", "adversarial_figure", "grid_step",
           "interactive", "one_at_a_time", "attack_explorer", "black_box_attacks", "clever_explorer",
           "defence_budgets", "defence_curves", "draw_clever", "draw_output_bounds", "eps_sweep",
           "epsilon_explorer", "explorer_attacks",
           "image_row", "query_explorer", "reach_explorer", "show_image", "show_perturbation",
           "smoothing_radii"]
from .future_defence import schmidt_explorer  # noqa: E402  (lesson 05b)

__all__ += ["schmidt_explorer"]


# lesson 05a (future directions, attacks): the stored query-budget curves
from .future_a import decision_curves, query_curves  # noqa: E402

__all__ += ["decision_curves", "query_curves"]


# lesson 05c (future directions in verification): verdicts over regions of growing size
from .future_c import region_explorer  # noqa: E402

__all__ += ["region_explorer"]

# lesson 02d (attacks beyond images)
from .beyond import marked_edits, text_attack_explorer  # noqa: E402

__all__ += ["marked_edits", "text_attack_explorer"]

# lesson 02d: point clouds turned with the attack's points highlighted, clean against adversarial audio
from .beyond_audio import GAINS, audio_comparison, audio_view  # noqa: E402
from .beyond_clouds import cloud_changes, cloud_view, point_cloud_viewer  # noqa: E402

__all__ += ["GAINS", "audio_comparison", "audio_view", "cloud_changes", "cloud_view", "point_cloud_viewer"]

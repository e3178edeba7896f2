"""Adversarial attacks: plain functions ``attack(model, x, y, *, eps, norm, targeted, ...)``.

One module per attack or family: gradient (FGSM, PGD), cw, deepfool, lbfgs, spatial (stAdv),
universal (UAP, GUAP), patch (the adversarial patch), adaptive (EOT, BPDA), pixel (one-pixel),
perceptual (PGD under an SSIM or feature-distance bound); beyond images: text (HotFlip,
TextBugger, synonym substitution, AddSent-style distracting clauses; their similarity metrics in
text_metrics), reading (AddSent on reading comprehension), graph (Nettack, PGD topology),
pointcloud, audio (dB-bounded, EOT over rooms); and the black-box attacks zoo, square,
hop_skip_jump, rays and sign_opt, which reach the model through the query interface of oracle.
Every black-box attack (one_pixel too) returns ``(x_adv, queries)``; the image attacks return
x_adv; `patch` returns the patch, pasted with `apply_patch`; the attacks beyond images return a
result object that reports their constraint.
"""

from .adaptive import BPDA, EOT
from .cw import cw
from .deepfool import deepfool
from .embedding import embedding_pgd, embedding_robust_accuracy
from .gradient import fgsm, pgd
from .hop_skip_jump import hop_skip_jump
from .lbfgs import lbfgs
from .oracle import Oracle, QueryBudgetError, QueryLedger
from .patch import apply_patch, patch, patch_success
from .pixel import one_pixel, single_pixel_search
from .spatial import flow_loss, flow_warp, stadv
from .square import square
from .universal import apply_guap, fooling_rate, guap, guap_flow_norm, uap
from .zoo import zoo

__all__ = ["BPDA", "EOT", "Oracle", "QueryBudgetError", "QueryLedger", "apply_guap", "apply_patch",
           "cw", "deepfool", "fgsm", "flow_loss", "flow_warp", "fooling_rate", "guap", "guap_flow_norm",
           "hop_skip_jump", "lbfgs", "one_pixel", "patch", "patch_success", "pgd", "single_pixel_search",
           "square", "stadv", "uap", "zoo"]
__all__ += ["embedding_pgd", "embedding_robust_accuracy"]
from .pixel import corner_pixel_search, random_pixel_search  # noqa: E402

__all__ += ["corner_pixel_search", "random_pixel_search"]
from .text import (  # noqa: E402
    DISTRACTORS,
    add_sentence,
    hotflip,
    hotflip_scores,
    synonym_attack,
    text_transfer,
    textbugger,
)
from .text_metrics import (  # noqa: E402
    TextAttackResult,
    edit_distance,
    embedding_cosine,
    text_similarity,
    word_overlap,
)

__all__ += ["DISTRACTORS", "TextAttackResult", "add_sentence", "edit_distance", "embedding_cosine",
            "hotflip", "hotflip_scores", "synonym_attack", "text_similarity", "text_transfer",
            "textbugger", "word_overlap"]
from .reading import (  # noqa: E402
    RULES,
    ReadingAttackResult,
    add_off_topic,
    addonesent,
    addsent,
    question_to_statement,
)

__all__ += ["RULES", "ReadingAttackResult", "add_off_topic", "addonesent", "addsent",
            "question_to_statement"]

from .graph import nettack, pgd_topology, poison_eval, random_flips, surrogate_logits  # noqa: E402

__all__ += ["nettack", "pgd_topology", "poison_eval", "random_flips", "surrogate_logits"]


# perceptually bounded PGD (attacks/perceptual.py; its metrics are robustlab.perceptual)
from .perceptual import perceptual_pgd  # noqa: E402

__all__ += ["perceptual_pgd"]

from .audio import (  # noqa: E402
    AudioAttackResult,
    audio_attack,
    audio_eot,
    audio_universal,
    db,
    relative_db,
    room_impulse,
    room_success_rate,
    simulate_room,
)

__all__ += ["AudioAttackResult", "audio_attack", "audio_eot", "audio_universal", "db", "relative_db",
            "room_impulse", "room_success_rate", "simulate_room"]

from .rays import rays  # noqa: E402
from .sign_opt import sign_opt  # noqa: E402

__all__ += ["rays", "sign_opt"]

from .pointcloud import (  # noqa: E402
    PointAttackResult,
    add_points,
    chamfer_distance,
    critical_points,
    drop_points,
    hausdorff_distance,
    pointcloud_transfer,
)
from .pointcloud import perturb as perturb_points  # noqa: E402

__all__ += ["PointAttackResult", "add_points", "chamfer_distance", "critical_points", "drop_points",
            "hausdorff_distance", "perturb_points", "pointcloud_transfer"]

# physical patches (physical.py): a printed-and-photographed scene for EOT
from .physical import Photographed, physical_transforms  # noqa: E402

__all__ += ["Photographed", "physical_transforms"]

"""Defences: input transformations (transforms: bit depth, median, JPEG, TV minimisation, random
resize-pad; squeeze: the feature-squeezing detector), training objectives for `train.fit`
(objectives: FGSM-AT, PGD-AT, Fast-AT, DeepFool-AT, SmoothAdv; dro: TRADES, VAT, WRM), defences
that change the training loop (loops: Free-AT, YOPO, AWP), regularisers of the weights
(regularisers: spectral normalisation, Parseval networks, Björck orthonormal layers with
GroupSort, the weight correlation penalty, early stopping on robust validation accuracy),
orthogonal convolutions (orthogonal: the Cayley OrthogonalConv2d and a GNP network's certified
radius), randomized smoothing (smoothing: `robustlab.defences.smoothing.predict` and `certify`;
certificates: Laplace smoothing's L1 radius and Lecuyer et al.'s bound beside Cohen's) and
data-parallel training (distributed: any objective under torch.distributed DDP, with torchrun
or `launch`); FreeLB on embeddings (freelb), latent-distribution adversarial training (latent)
and defensive distillation (distillation)."""

from . import certificates, distributed, smoothing
from .certificates import (
    cohen_radius,
    laplace_certify,
    laplace_noise,
    laplace_radius,
    lecuyer_radius,
)
from .distillation import distillation, soft_labels
from .distributed import ddp_fit, launch, shard_batches
from .dro import trades, vat, vat_direction, wrm, wrm_surrogate
from .freelb import freelb
from .latent import latent_at, latent_discriminator
from .loops import awp, free_at, yopo
from .objectives import cyclic_lr, deepfool_at, fast_at, fgsm_at, pgd_at, smooth_adv
from .orthogonal import OrthogonalConv2d, gnp_radius
from .regularisers import (
    BestRobust,
    BjorckLinear,
    GroupSort,
    augmented,
    bjorck,
    parseval,
    parseval_retraction,
    random_shift,
    spectral_normalised,
    spectral_norms,
    weight_correlation,
    weight_correlation_penalty,
)
from .smoothing import certified_accuracy, gaussian_noise
from .squeeze import SqueezeDetector, calibrate_squeezing, default_squeezers, squeeze_score
from .transforms import (
    Defended,
    RandomResizePad,
    Transform,
    bit_depth,
    jpeg,
    jpeg_approx,
    median_filter,
    total_variation,
    tv_denoise,
)

__all__ = ["BestRobust", "BjorckLinear", "Defended", "GroupSort", "RandomResizePad", "Transform",
           "awp", "bit_depth", "bjorck", "certified_accuracy", "cyclic_lr", "fast_at", "fgsm_at",
           "free_at", "gaussian_noise", "parseval", "parseval_retraction", "pgd_at", "smoothing",
           "spectral_normalised", "spectral_norms", "trades", "vat", "vat_direction",
           "weight_correlation", "weight_correlation_penalty", "wrm", "wrm_surrogate", "yopo"]
__all__ += ["ddp_fit", "distributed", "launch", "shard_batches"]
__all__ += ["SqueezeDetector", "calibrate_squeezing", "default_squeezers", "jpeg", "jpeg_approx",
            "median_filter", "squeeze_score", "total_variation", "tv_denoise"]
__all__ += ["freelb", "latent_at", "latent_discriminator"]
__all__ += ["augmented", "random_shift"]
__all__ += ["deepfool_at", "smooth_adv"]
__all__ += ["certificates", "cohen_radius", "laplace_certify", "laplace_noise", "laplace_radius",
            "lecuyer_radius"]
__all__ += ["distillation", "soft_labels"]
__all__ += ["OrthogonalConv2d", "gnp_radius"]

# federated adversarial training (defences/federated.py)
from . import federated  # noqa: E402
from .federated import (  # noqa: E402
    FederatedHistory,
    clean_and_robust,
    dirichlet_split,
    federated_fit,
)

__all__ += ["FederatedHistory", "clean_and_robust", "dirichlet_split", "federated",
            "federated_fit"]

# semi-supervised adversarial training: robust self-training (defences/semi.py)
from . import semi  # noqa: E402
from .semi import SelfTraining, pseudo_labels, robust_self_training  # noqa: E402

__all__ += ["SelfTraining", "pseudo_labels", "robust_self_training", "semi"]

"""Feature squeezing's detector: the score is the L1 distance it claims, the threshold keeps the
false positive rate on clean data, adversarial inputs are flagged far more often."""

from functools import partial

import pytest
import torch
from torch import nn

from robustlab.attacks import pgd
from robustlab.defences import SqueezeDetector, bit_depth, calibrate_squeezing, squeeze_score

from ..conftest import leaves_as_found, messy_model, seeded

TWO_BITS = {"bit_depth_2": partial(bit_depth, bits=2)}


def test_score_is_max_l1_between_softmaxes(digits_cnn, digits_test):
    x = digits_test[0][:20]
    squeezers = {**TWO_BITS, "half": lambda t: t / 2}
    p = digits_cnn(x).softmax(1)
    manual = torch.stack([(p - digits_cnn(s(x)).softmax(1)).abs().sum(1)
                          for s in squeezers.values()]).amax(0)
    score = squeeze_score(digits_cnn, x, squeezers)
    assert torch.allclose(score, manual.detach(), atol=1e-6)
    assert (score >= 0).all() and (score <= 2).all()
    assert torch.equal(squeeze_score(digits_cnn, x, {"id": lambda t: t}), torch.zeros(20))


@pytest.mark.parametrize("seed", [0, 1])
def test_false_positive_rate_and_detection(digits_cnn, digits_test, seed):
    """Calibrated on one half of the test digits at 5 %; on the other half, at most 5 % + 7
    points flag (binomial sd of a 5 % rate on 180 examples: 1.6 points), while PGD examples
    (eps 0.1, not adaptive) flag at least 25 points more often than clean ones."""
    x, y = digits_test
    order = torch.randperm(len(x), generator=seeded(seed))
    calib, held = order[:180], order[180:]
    detector = calibrate_squeezing(digits_cnn, x[calib], fpr=0.05, squeezers=TWO_BITS)
    assert detector(x[calib]).sum().item() <= int(0.05 * 180), "exact on the calibration set"
    fpr = detector(x[held]).float().mean().item()
    x_adv = pgd(digits_cnn, x[held], y[held], eps=0.1, alpha=0.02, steps=20, generator=seeded(seed))
    detected = detector(x_adv).float().mean().item()
    print(f"seed {seed}: threshold {detector.threshold:.3f}, held-out FPR {fpr:.3f}, "
          f"PGD flagged {detected:.3f}")
    assert fpr <= 0.05 + 0.07
    assert detected >= fpr + 0.25


def test_threshold_at_zero_fpr_is_the_largest_score(digits_cnn, digits_test):
    x = digits_test[0][:50]
    detector = calibrate_squeezing(digits_cnn, x, fpr=0.0, squeezers=TWO_BITS)
    assert detector.threshold == squeeze_score(digits_cnn, x, TWO_BITS).max().item()
    assert not detector(x).any()


def test_leaves_model_and_input_as_found(batch):
    x, _ = batch
    model = messy_model()
    leaves_as_found(lambda: calibrate_squeezing(model, x, squeezers=TWO_BITS), model, x)
    with torch.no_grad():
        leaves_as_found(lambda: squeeze_score(model, x), model, x)


def test_bad_input(digits_cnn, batch):
    x, _ = batch
    with pytest.raises(ValueError, match="fpr"):
        calibrate_squeezing(digits_cnn, x, fpr=1.0)
    with pytest.raises(ValueError, match="squeezers"):
        squeeze_score(digits_cnn, x, {})
    with pytest.raises(TypeError, match=r"squeezers\['s'\]"):
        squeeze_score(digits_cnn, x, {"s": 3})
    with pytest.raises(TypeError, match="model"):
        squeeze_score(lambda t: t, x)
    with pytest.raises(TypeError, match="dtype"):
        squeeze_score(digits_cnn, x.double())
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        squeeze_score(digits_cnn, x[0])


class NaNLogits(nn.Module):
    """A classifier broken after calibration: NaN logits for every input."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return torch.full((len(x), 10), float("nan")) * self.scale


# issue 15: a NaN input scored NaN and was never flagged; one NaN calibration image gave a NaN
# threshold, which flags nothing
def test_nan_can_never_disable_the_detector(digits_cnn, digits_test):
    x = digits_test[0][:40].clone()
    poisoned = x.clone()
    poisoned[3, 0, 2, 2] = float("nan")  # one pixel among 40 calibration images
    with pytest.raises(ValueError, match="x_clean contains NaN"):
        calibrate_squeezing(digits_cnn, poisoned, squeezers=TWO_BITS)
    with pytest.raises(ValueError, match="x contains NaN"):
        squeeze_score(digits_cnn, poisoned, TWO_BITS)
    detector = calibrate_squeezing(digits_cnn, x, squeezers=TWO_BITS)
    with pytest.raises(ValueError, match="x contains NaN"):
        detector(poisoned)
    with pytest.raises(ValueError, match="model returns NaN"):
        calibrate_squeezing(NaNLogits(), x, squeezers=TWO_BITS)
    with pytest.raises(ValueError, match="threshold"):
        SqueezeDetector(digits_cnn, TWO_BITS, float("nan"), 0.05)
    # a model that turns NaN after calibration: its NaN scores are flagged, not waved through
    assert SqueezeDetector(NaNLogits(), TWO_BITS, detector.threshold, 0.05)(x).all()

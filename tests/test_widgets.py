import matplotlib
import pytest

matplotlib.use("Agg")

from robustlab import data, models, widgets  # noqa: E402


def test_epsilon_explorer_reacts_to_slider():
    m = models.pretrained("digits-cnn")
    x, y = data.digits("test")
    w = widgets.epsilon_explorer(m, x[:5], y[:5], eps=0.0)
    assert w.state["eps"] == 0.0 and not w.state["fooled"]
    assert w.state["pred"] == y[0].item()
    w.eps.value = 0.4
    assert w.state["eps"] == 0.4 and w.state["fooled"]
    w.index.value = 2
    assert w.state["index"] == 2 and w.state["label"] == y[2].item()


def test_attack_explorer_targeted_and_norms():
    m = models.pretrained("digits-cnn")
    x, y = data.digits("test")
    w = widgets.attack_explorer(m, x[:4], y[:4], eps_ranges={"linf": (0.3, 0.5)})
    assert w.state["fooled"] and w.state["linf"] <= 0.3 + 1e-6
    w.attack.value = "PGD"
    w.target.value = (y[0].item() + 3) % 10
    assert w.state["reached_target"]
    w.norm.value = "l2"  # the slider jumps to the L2 range
    assert (w.eps.value, w.eps.max) == widgets.EPS_RANGES["l2"] and w.state["eps"] == 1.0
    w.eps.value = 0.1
    assert w.state["l2"] <= 0.1 + 1e-5 and not w.state["fooled"]
    w.eps.value = 0.0  # the slider's left end: no perturbation, no error
    assert w.state["l2"] == 0 and not w.state["fooled"]
    w.norm.value = "linf"
    assert (w.eps.value, w.eps.max) == (0.3, 0.5)


def test_attack_explorer_cw_follows_the_norm_and_ignores_eps():
    m = models.pretrained("digits-cnn")
    x, y = data.digits("test")
    w = widgets.attack_explorer(m, x[:2], y[:2])
    w.attack.value = "C&W"
    assert w.eps.disabled and w.state["fooled"] and w.state["norm"] == "linf"
    linf_of_linf, l2_of_linf = w.state["linf"], w.state["l2"]
    w.norm.value = "l2"
    assert w.state["fooled"] and w.state["norm"] == "l2"
    # each C&W variant is smallest in its own norm: C&W L-inf spreads the change over the
    # pixels, so its largest pixel change is below that of C&W L2, whose L2 is the smaller
    assert w.state["linf"] > linf_of_linf and w.state["l2"] < l2_of_linf
    w.attack.value = "PGD"
    assert not w.eps.disabled


def test_explorer_ranges_are_checked():
    m = models.pretrained("digits-cnn")
    x, y = data.digits("test")
    with pytest.raises(ValueError, match="eps_ranges must be a dict with keys among"):
        widgets.attack_explorer(m, x[:2], y[:2], eps_ranges={"l1": (1.0, 2.0)})


def test_eps_sweep_curves_fall():
    m = models.pretrained("digits-cnn")
    x, y = data.digits("test")
    w = widgets.eps_sweep(m, x[:40], y[:40], eps_max={"linf": 0.3}, points=4)
    assert set(w.state["curves"]) == {"FGSM / FGM", "PGD"}  # minimum-norm attacks have no eps
    for curve in w.state["curves"].values():
        accs = [a for _, a in curve]
        assert accs[0] > 0.9 and accs[-1] < 0.3
    w.norm.value = "l2"
    assert w.state["norm"] == "l2" and w.eps_max.value == widgets.SWEEP_MAX["l2"]
    assert max(e for e, _ in w.state["curves"]["PGD"]) == widgets.SWEEP_MAX["l2"]


def test_defence_curves_switch_between_models():
    import torch

    cnn = models.pretrained("digits-cnn")
    x, y = data.digits("test")
    # a constant classifier: its "robust accuracy" is the share of its class at every eps
    const = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    with torch.no_grad():
        const[1].weight.zero_()
        const[1].bias.copy_(torch.arange(10.0))
    w = widgets.defence_curves({"cnn": cnn, "constant 9": const}, x[:40], y[:40],
                               eps_max=0.3, points=4)
    assert set(w.state["curves"]) == {"cnn", "constant 9"}
    share = (y[:40] == 9).float().mean().item()
    assert [a for _, a in w.state["curves"]["constant 9"]] == pytest.approx([share] * 4)
    cnn_acc = [a for _, a in w.state["curves"]["cnn"]]
    assert cnn_acc[0] > 0.9 and cnn_acc[-1] < 0.3 and cnn_acc == sorted(cnn_acc, reverse=True)
    w.defences.value = ("cnn",)
    assert set(w.state["curves"]) == {"cnn"}
    w.eps_max.value = 0.1
    assert w.state["curves"]["cnn"][-1][0] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="defended"):
        widgets.defence_curves({}, x[:4], y[:4])
    with pytest.raises(ValueError, match="show"):
        widgets.defence_curves({"cnn": cnn}, x[:4], y[:4], show=["resnet"])
    w = widgets.defence_curves({"cnn": cnn, "constant 9": const}, x[:4], y[:4], show=["constant 9"])
    assert set(w.state["curves"]) == {"constant 9"}


def test_smoothing_radii_slider_scales_the_certified_radii():
    import pytest
    import torch
    from scipy import stats

    x, y = data.digits("test")
    x, y = x[:12], y[:12]
    # a classifier that always says 3 by a huge margin: every noisy copy votes 3, so CERTIFY's
    # bound is alpha^(1/n) and every radius is exactly sigma * Phi^-1(alpha^(1/n))
    const = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    with torch.no_grad():
        const[1].weight.zero_()
        const[1].bias.copy_(torch.nn.functional.one_hot(torch.tensor(3), 10) * 100.0)
    w = widgets.smoothing_radii(const, x, y, sigmas=[0.1, 0.4], n0=10, n=50, alpha=0.01)
    cap = stats.norm.ppf(0.01 ** (1 / 50))
    for sigma in (0.1, 0.4):
        w.sigma.value = sigma
        s = w.state
        assert s["sigma"] == sigma and s["max_radius"] == pytest.approx(sigma * cap)
        assert len(s["radii"]) == int((y == 3).sum()) > 0
        assert s["radii"] == pytest.approx([sigma * cap] * len(s["radii"]), rel=1e-5)
        assert s["certified_accuracy"] == pytest.approx((y == 3).float().mean().item())
        assert s["abstained"] == 0
    # the histogram: radii at the cap fill the last bar, which ends at the cap's dashed line
    import matplotlib.pyplot as plt

    shown = []
    real_show, plt.show = plt.show, lambda *a, **k: shown.append(plt.gcf())
    try:
        w.sigma.value = 0.1
    finally:
        plt.show = real_show
    bars = [p for p in shown[-1].axes[0].patches if p.get_height() > 0]
    assert len(bars) == 1 and bars[0].get_height() == len(w.state["radii"])
    assert bars[0].get_x() + bars[0].get_width() == pytest.approx(0.1 * cap)
    # a classifier per sigma, and the checks
    cnn = models.pretrained("digits-cnn-noise")
    w = widgets.smoothing_radii({0.25: cnn}, x, y, sigmas=[0.25], n0=10, n=50)
    assert w.state["certified_accuracy"] > 0.5
    with pytest.raises(ValueError, match="sigmas"):
        widgets.smoothing_radii({0.25: cnn}, x, y, sigmas=[0.5])
    with pytest.raises(ValueError, match="sigmas"):
        widgets.smoothing_radii(cnn, x, y, sigmas=[])


def test_query_explorer_stays_within_the_budget():
    m = models.pretrained("digits-cnn")
    x, y = data.digits("test")
    w = widgets.query_explorer(m, x[:3], y[:3], budget=10)
    assert w.state["attack"] == "Square L∞ ε=0.2" and w.state["queries"] <= 10
    assert w.state["linf"] <= 0.2 + 1e-6
    w.budget.value = 1000   # Square at 0.2 breaks these digits within a few dozen queries
    assert w.state["fooled"] and 0 < w.state["queries"] <= 1000
    again = w.state
    w.index.value = 1
    w.index.value = 0       # a fresh generator on every call: the same settings, the same result
    assert w.state == again
    w.attack.value = "HopSkipJump L2"
    assert w.state["queries"] <= 1000 and w.state["fooled"]
    assert w.state["l2"] < 3.0 and w.state["linf"] <= 1.0


def test_query_explorer_checks_the_budget():
    m = models.pretrained("digits-cnn")
    x, y = data.digits("test")
    with pytest.raises(ValueError, match="budget"):
        widgets.query_explorer(m, x[:2], y[:2], budget=0)


def _sliders(widget):
    """Every FloatSlider inside a widget container."""
    import ipywidgets as W
    found = [widget] if isinstance(widget, W.FloatSlider) else []
    for child in getattr(widget, "children", ()):
        found += _sliders(child)
    return found


def _on_grid(slider) -> bool:
    k = round((slider.value - slider.min) / slider.step)
    return slider.min + k * slider.step == slider.value


def test_sliders_start_on_their_grid():
    """A start value off the step grid (0.05 + 7 * 0.05 is 0.39999999999999997) jumps at the
    first click, and one arrow press recomputes twice. The lessons' own settings."""
    m = models.pretrained("digits-cnn")
    x, y = data.digits("test")
    built = [widgets.epsilon_explorer(m, x[:2], y[:2], eps=0.1, eps_max=0.4),
             widgets.attack_explorer(m, x[:2], y[:2]),
             widgets.eps_sweep(m, x[:4], y[:4], points=2)]
    for w in built:
        for s in _sliders(w):
            assert _on_grid(s), (s.description, s.value, s.min, s.step)
    w = built[1]
    w.norm.value = "l2"  # the L2 range gets its own grid
    assert _on_grid(w.eps) and w.eps.value == widgets.EPS_RANGES["l2"][0]
    sweep = built[2]
    sweep.norm.value = "l2"
    assert _on_grid(sweep.eps_max) and sweep.eps_max.value == widgets.SWEEP_MAX["l2"]


def test_grid_step_is_round_and_falls_back_to_the_plain_grid():
    assert widgets.grid_step((0.1,), 0.4) == 0.01
    assert widgets.grid_step((0.4, 3.0), 9.0) == 0.2
    assert widgets.grid_step((0.123,), 0.4) == 0.4 / 50  # no round step fits 0.123


def test_untargeted_is_a_real_option():
    """ipywidgets shows a None-valued option as nothing selected: the dropdown went blank after
    choosing a target and then "untargeted"."""
    m = models.pretrained("digits-cnn")
    x, y = data.digits("test")
    w = widgets.attack_explorer(m, x[:2], y[:2])
    assert w.target.value == widgets.UNTARGETED and w.target.index == 0
    w.target.value = 3
    w.target.value = widgets.UNTARGETED
    assert w.target.index == 0 and w.target.label == "untargeted"
    assert w.state["target"] is None and not w.state["reached_target"]


def test_sweep_with_no_attack_draws_no_legend_warning():
    import warnings
    m = models.pretrained("digits-cnn")
    x, y = data.digits("test")
    w = widgets.eps_sweep(m, x[:4], y[:4], points=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        w.attacks.value = ()
    assert w.state["curves"] == {}


def test_redraws_wait_for_each_other():
    """JupyterLab may call two widgets' observers on two kernel threads at once; a redraw beside
    another came out blank or half drawn. A redraw from another thread waits for the lock."""
    import threading
    m = models.pretrained("digits-cnn")
    x, y = data.digits("test")
    w = widgets.epsilon_explorer(m, x[:2], y[:2], eps=0.0)
    mover = threading.Thread(target=lambda: setattr(w.eps, "value", 0.3))
    with widgets.DRAWING:
        mover.start()
        mover.join(timeout=1.0)
        assert mover.is_alive() and w.state["eps"] == 0.0  # blocked while another redraw runs
    mover.join(timeout=60)
    assert not mover.is_alive() and w.state["eps"] == 0.3


def test_interactive_takes_the_drawing_lock():
    import threading

    import ipywidgets as W
    calls = []
    slider = W.FloatSlider(value=0.0, min=0.0, max=1.0, step=0.5)
    box = widgets.interactive(lambda s: calls.append(s), s=slider)
    assert calls == [0.0]  # drawn once when built
    mover = threading.Thread(target=lambda: setattr(slider, "value", 0.5))
    with widgets.DRAWING:
        mover.start()
        mover.join(timeout=1.0)
        assert mover.is_alive() and calls == [0.0]
    mover.join(timeout=60)
    assert calls == [0.0, 0.5] and isinstance(box, W.interactive)

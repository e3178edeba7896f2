"""Lesson 02d's point-cloud viewer and audio comparison (`robustlab.widgets.beyond_clouds` and
`beyond_audio`): the points highlighted are exactly those the attack moved, added or dropped, the
answers shown are the model's, the levels played are the real ones times the gain said, the
sliders sit on their grid, bad input is refused naming the argument, and a redraw waits for the
drawing lock.
"""

import functools
import io
import math
import threading
import wave

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from torch import nn  # noqa: E402

from robustlab import attacks, widgets  # noqa: E402
from robustlab.audio_data import clips  # noqa: E402
from robustlab.audio_models import train_audio_model  # noqa: E402
from robustlab.pointcloud_data import CLASSES as SHAPES  # noqa: E402
from robustlab.pointcloud_data import shapes  # noqa: E402
from robustlab.pointcloud_models import DGCNN, train_point_model  # noqa: E402
from robustlab.train import predict  # noqa: E402

N = 4  # clouds and clips attacked


@functools.cache
def _clouds():
    """Four test clouds, a trained PointNet, an untrained DGCNN, and the three attacks' results."""
    x, y = (t[:N] for t in shapes("test", seed=0))
    pointnet = train_point_model("pointnet", seed=0)
    torch.manual_seed(0)
    dgcnn = DGCNN().eval()
    results = {"shift": attacks.perturb_points(pointnet, x, y, eps=0.2, steps=5),
               "add": attacks.add_points(pointnet, x, y, n_add=16, eps=0.15, steps=5),
               "drop": attacks.drop_points(pointnet, x, y, n_drop=40)}
    return x, y, {"pointnet": pointnet, "dgcnn": dgcnn}, results


@functools.cache
def _audio():
    """Eight test clips (one per word), the audio CNN and a targeted attack on them."""
    x, y = clips("test", n_per_class=1)
    net = train_audio_model(seed=0)
    target = (y + 3) % 8
    return x, y, net, target, attacks.audio_attack(net, x, target, tau_db=-30.0, steps=40)


@pytest.fixture
def shown(monkeypatch):
    """What each redraw shows: per axes of the current figure, its title and its scatter
    collections as (legend label, 3-D points), read when the widget calls plt.show()."""
    frames = []

    def show(*_, **__):
        frames.append([(ax.get_title(), [(c.get_label(), np.column_stack(c._offsets3d))
                                         for c in ax.collections if hasattr(c, "_offsets3d")])
                       for ax in plt.gcf().axes])
    monkeypatch.setattr(plt, "show", show)
    return frames


# --- point clouds ---------------------------------------------------------------------------

def test_cloud_changes_on_hand_made_clouds():
    a = torch.arange(15, dtype=torch.float32).view(5, 3)
    b = a.clone()
    b[1, 0] += 1e-6  # the smallest move counts: "moved" means any coordinate differs
    b[3] = 0.0
    c = widgets.cloud_changes(a, b)
    assert c["kind"] == "moved" and c["changed"].tolist() == [False, True, False, True, False]
    assert torch.equal(c["new"], c["changed"]) and c["shift"][0] == 0
    assert c["shift"][3].item() == pytest.approx(a[3].norm().item())
    c = widgets.cloud_changes(a, torch.cat([a, torch.ones(2, 3)]))
    assert c["kind"] == "added" and c["new"].tolist() == [False] * 5 + [True] * 2 and not c["changed"].any()
    c = widgets.cloud_changes(a, a[[0, 2, 4]])
    assert c["kind"] == "dropped" and c["changed"].tolist() == [False, True, False, True, False]
    assert c["new"].numel() == 3 and not c["new"].any()
    with pytest.raises(ValueError, match="clean points first"):
        widgets.cloud_changes(a, torch.cat([torch.ones(2, 3), a]))
    with pytest.raises(ValueError, match="order kept"):
        widgets.cloud_changes(a, a[[4, 2, 0]])
    with pytest.raises(ValueError, match="adversarial must be one cloud"):
        widgets.cloud_changes(a, a[None])
    with pytest.raises(ValueError, match="clean contains NaN"):
        widgets.cloud_changes(torch.full((5, 3), math.nan), a)


def test_viewer_highlights_exactly_the_changed_points(shown):
    x, y, models, results = _clouds()
    w = widgets.point_cloud_viewer(x, results, models=models, labels=y)
    assert list(w.attack.options) == ["shift", "add", "drop"]
    for name, r in results.items():
        w.attack.value = name
        for i in range(N):
            w.index.value = i
            s, (left, right) = w.state, shown[-1]
            adv = r.adversarial[i]
            if name == "shift":  # the points that moved, no other
                truth_old = truth_new = (adv != x[i]).any(1)
                assert 0 < int(truth_new.sum()) < len(adv), "PointNet moves its critical points only"
            elif name == "add":
                truth_old = torch.zeros(len(x[i]), dtype=torch.bool)
                truth_new = torch.arange(len(adv)) >= len(x[i])
            else:  # dropped: the clean points absent from the adversarial cloud
                truth_old = ~(x[i][:, None] == adv[None]).all(2).any(1)
                truth_new = torch.zeros(len(adv), dtype=torch.bool)
            assert torch.equal(s["changed"], truth_old) and torch.equal(s["new"], truth_new)
            kind = s["kind"]
            assert kind == {"shift": "moved", "add": "added", "drop": "dropped"}[name]
            for (_, drawn), cloud, mask in ((left, x[i], truth_old), (right, adv, truth_new)):
                parts = dict(drawn)
                highlighted = [v for k, v in parts.items() if k.startswith(kind)]
                assert parts[f"unchanged ({int((~mask).sum())})"].shape == (int((~mask).sum()), 3)
                if mask.any():  # the coloured points are the changed ones, where they are
                    assert np.allclose(highlighted[0], cloud[mask].double().numpy())
                else:
                    assert not highlighted
            assert s["chamfer"] == pytest.approx(r.chamfer[i].item(), abs=1e-6)
            assert s["hausdorff"] == pytest.approx(r.hausdorff[i].item(), abs=1e-6)
            for net_name, m in models.items():  # the answers shown are the model's own
                for key, cloud, title in (("clean", x[i], left[0]), ("adversarial", adv, right[0])):
                    p = predict(m, cloud[None]).softmax(1)[0]
                    k, word, conf = s["predictions"][net_name][key]
                    assert k == int(p.argmax()) and conf == pytest.approx(p.max().item())
                    changed = key == "adversarial" and k != s["predictions"][net_name]["clean"][0]
                    assert f"{net_name}: {word} {conf:.0%}{' (changed)' if changed else ''}\n" in title + "\n"
            assert f"true: {s['label']}" in left[0] and s["label"] == SHAPES[int(y[i])]


def test_viewer_turns_on_its_grid_without_rerunning_the_models(shown):
    x, y, models, results = _clouds()
    w = widgets.point_cloud_viewer(x, results["shift"], models=models["pointnet"], azimuth=-45,
                                   elevation=15)
    assert w.state["attack"] == "perturb" and "PointNet" in w.state["predictions"]
    for s in (w.azimuth, w.elevation, w.index):
        assert (s.value - s.min) % s.step == 0, s.description
    assert (w.azimuth.min, w.azimuth.max, w.elevation.min, w.elevation.max) == (-180, 180, -90, 90)
    calls = []
    hook = models["pointnet"].register_forward_hook(lambda *_: calls.append(1))
    try:
        for azim, elev in ((90, -30), (-180, 90), (0, 0)):
            w.azimuth.value, w.elevation.value = azim, elev
            assert w.state["drawn_view"] == (elev, azim) and w.state["azimuth"] == azim
    finally:
        hook.remove()
    assert calls == [], "turning the cloud re-ran the model"
    assert len(shown) == 7  # built, then one redraw per slider move


def test_viewer_leaves_the_models_as_found():
    x, y, models, results = _clouds()
    net = models["dgcnn"].train()
    flags = [p.requires_grad for p in net.parameters()]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    try:
        w = widgets.point_cloud_viewer(x, results["add"], models={"dgcnn": net})
        w.index.value = 2
        assert net.training and [p.requires_grad for p in net.parameters()] == flags
        assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
        assert all(p.grad is None for p in net.parameters())
    finally:
        net.eval()


@pytest.mark.parametrize("change, match", [
    (lambda x, r: dict(clouds=torch.zeros(4, 5, 2)), "clouds must have shape"),
    (lambda x, r: dict(adversarial={}), "adversarial must not be empty"),
    (lambda x, r: dict(adversarial={"few": x[:3]}), r"adversarial\['few'\] holds 3 clouds"),
    (lambda x, r: dict(adversarial={"shuffled": r["drop"].adversarial.flip(1)}),
     r"adversarial\['shuffled'\], cloud 0: .*order kept"),
    (lambda x, r: dict(adversarial={"other": r["shift"]}, clouds=x + 0.01),
     r"adversarial\['other'\] is an attack on other clouds"),
    (lambda x, r: dict(models={"a": "pointnet"}), r"models\['a'\] must be a torch.nn.Module"),
    (lambda x, r: dict(labels=torch.zeros(3, dtype=torch.long)), "labels must have shape"),
    (lambda x, r: dict(index=4), r"index must lie in \[0, 3\]"),
    (lambda x, r: dict(azimuth=7), "azimuth must be a multiple of 5"),
    (lambda x, r: dict(elevation=95), r"elevation must lie in \[-90, 90\]"),
])
def test_viewer_refuses_bad_input_naming_it(change, match):
    x, y, models, results = _clouds()
    kwargs = {**dict(clouds=x, adversarial=results, models=models, labels=y), **change(x, results)}
    with pytest.raises((ValueError, TypeError), match=match):
        widgets.point_cloud_viewer(**kwargs)


# --- audio ----------------------------------------------------------------------------------

def _samples(player) -> np.ndarray:
    """The 16-bit samples an Audio player holds."""
    with wave.open(io.BytesIO(player.data)) as f:
        return np.frombuffer(f.readframes(f.getnframes()), dtype="<i2")


def test_audio_view_on_a_known_perturbation():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(400, 8))
    t = torch.arange(400) / 8000
    clip = (0.5 * torch.sin(2 * math.pi * 300 * t))[None]
    delta = torch.where(torch.arange(400) % 2 == 0, 0.005, -0.0005)[None]  # peak 0.005: -40 dB
    for gain, clipped in ((1, 0), (100, 0), (1000, 200)):  # x1000: the 0.005 samples reach 5
        v = widgets.audio_view(model, clip, clip + delta, gain=gain, label=2, target=5)
        assert v["db"] == pytest.approx(-40.0, abs=1e-3)
        assert v["played_db"] == pytest.approx(-40.0 + 20 * math.log10(gain), abs=1e-3)
        assert v["clipped"] == clipped and v["gain"] == gain
        assert np.allclose(v["played"], (gain * (v["adversarial"] - v["clean"])).clip(-1, 1), atol=1e-5)
        assert np.array_equal(v["clean"], clip.numpy())
        for key, x in (("clean", clip), ("adversarial", clip + delta)):
            p = model(x[None]).softmax(1)[0]
            assert v[f"{key}_class"] == int(p.argmax())
            assert v[f"{key}_confidence"] == pytest.approx(p.max().item())
        assert v["reached"] == (v["adversarial_class"] == 5) and (v["label"], v["target"]) == ("up", "right")
    v = widgets.audio_view(model, clip, 1.01 * clip, sample_rate=8000)  # delta = clip / 100: -40 dB
    assert v["db"] == pytest.approx(-40.0, abs=1e-3) and v["freqs"][-1] == 4000
    loud = v["clean_spectrogram"] > v["clean_spectrogram"].max() - 60  # above float32's rounding
    assert loud.sum() > 4 and np.allclose(v["perturbation_spectrogram"][loud],
                                          v["clean_spectrogram"][loud] - 40, atol=1e-2)
    assert v["clean_spectrogram"].shape == (len(v["freqs"]), len(v["times"]))
    with pytest.raises(ValueError, match="gain must be one of"):
        widgets.audio_view(model, clip, clip, gain=3)
    with pytest.raises(ValueError, match="sample_rate must be > 0"):
        widgets.audio_view(model, clip, clip, sample_rate=-1)


def test_audio_comparison_plays_real_levels_and_says_the_gain(shown):
    x, y, net, target, heard = _audio()
    w = widgets.audio_comparison(net, x, heard, y=y, target=target)
    assert [v for _, v in w.gain.options] == list(widgets.GAINS) and w.gain.value == 10
    assert (w.index.value - w.index.min) % w.index.step == 0
    for i in (0, 5):
        w.index.value = i
        for gain in (1, 100):
            w.gain.value = gain
            s = w.state
            assert s["db"] == pytest.approx(heard.db[i].item(), abs=1e-4)  # the attack's own dB_x
            assert s["adversarial_class"] == int(heard.predicted[i])
            assert s["reached"] == bool(heard.success[i])
            assert s["clean_class"] == int(predict(net, x[i:i + 1]).argmax()) and s["label"] is not None
            clean, adv, pert = (_samples(p) for p in s["players"])
            for samples, wave_ in ((clean, x[i, 0]), (adv, heard.x_adv[i, 0]),
                                   (pert, (gain * (heard.x_adv[i, 0] - x[i, 0])).clamp(-1, 1))):
                want = (wave_.double().numpy() * 32767).astype("<i2")  # no normalisation
                assert np.abs(samples.astype(int) - want.astype(int)).max() <= 1
            assert np.abs(clean).max() < 0.9 * 32767, "the clean clip is not played at full scale"
            for p in s["players"]:
                assert "autoplay" not in p._repr_html_() and "</div>" not in p._repr_html_()
            assert f"amplified ×{gain}: played at {s['played_db']:.1f} dB" in s["captions"][2]
            assert f"{s['db']:.1f} dB" in s["html"] and "</div>" not in s["html"]
            assert f"heard as '{s['adversarial_word']}' ({s['adversarial_confidence']:.0%})" in s["html"]
            assert f"dB_x(δ) = {s['db']:.1f} dB" in shown[-1][0][0]


@pytest.mark.parametrize("change, match", [
    (lambda x, h: dict(model="net"), "model must be a torch.nn.Module"),
    (lambda x, h: dict(x=[0.1]), "x must be a torch.Tensor"),
    (lambda x, h: dict(x=torch.cat([torch.zeros_like(x[:1]), x[1:]])), "x holds a silent clip"),
    (lambda x, h: dict(adversarial=h.x_adv[:, :, :100]), "adversarial must have x's shape"),
    (lambda x, h: dict(adversarial=h.x_adv * 3), "adversarial is clipped audio"),
    (lambda x, h: dict(y=torch.zeros(7, dtype=torch.long)), "y must have shape"),
    (lambda x, h: dict(target=torch.zeros(8)), "target must hold integer class indices"),
    (lambda x, h: dict(index=8), r"index must lie in \[0, 7\]"),
    (lambda x, h: dict(gain=5), "gain must be one of"),
    (lambda x, h: dict(sample_rate=0), "sample_rate must be > 0"),
])
def test_audio_comparison_refuses_bad_input_naming_it(change, match):
    x, y, net, target, heard = _audio()
    kwargs = {**dict(model=net, x=x, adversarial=heard, y=y, target=target), **change(x, heard)}
    with pytest.raises((ValueError, TypeError), match=match):
        widgets.audio_comparison(**kwargs)


# --- both -----------------------------------------------------------------------------------

def test_redraws_wait_for_the_drawing_lock():
    """As every widget: a redraw from another kernel thread waits while another one draws."""
    x, y, models, results = _clouds()
    xa, ya, net, target, heard = _audio()
    for w, key, value in ((widgets.point_cloud_viewer(x, results, models=models), "azimuth", 90),
                          (widgets.audio_comparison(net, xa, heard), "index", 3)):
        before = w.state[key]
        mover = threading.Thread(target=setattr, args=(getattr(w, key), "value", value))
        with widgets.DRAWING:
            mover.start()
            mover.join(timeout=1.0)
            assert mover.is_alive() and w.state[key] == before  # blocked while another redraw runs
        mover.join(timeout=60)
        assert not mover.is_alive() and w.state[key] == value

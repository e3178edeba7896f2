import matplotlib

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

import pytest
import torch

from robustlab import data


def test_digits_split_shapes_and_range():
    x, y = data.digits("train")
    xt, yt = data.digits("test")
    assert x.shape == (1437, 1, 8, 8) and xt.shape == (360, 1, 8, 8)
    assert x.dtype == torch.float32 and y.dtype == torch.long
    assert x.min() == 0 and x.max() == 1
    assert set(yt.tolist()) == set(range(10))
    assert torch.bincount(yt).min() >= 35  # stratified


def test_digits_split_is_fixed_and_disjoint():
    x1, _ = data.digits("test")
    x2, _ = data.digits("test")
    assert torch.equal(x1, x2)
    x1[0] += 1  # callers get copies: mutating one must not leak into the next call
    assert not torch.equal(x1, data.digits("test")[0])
    train = {tuple(r.flatten().tolist()) for r in data.digits("train")[0]}
    test = [tuple(r.flatten().tolist()) for r in data.digits("test")[0]]
    assert sum(t in train for t in test) < 10  # sklearn digits has a few exact duplicates


def test_bad_split():
    with pytest.raises(ValueError, match="split must be 'train' or 'test', got 'foo'"):
        data.digits(split="foo")


def test_traffic_lights():
    x, y = data.traffic_lights("test")
    assert x.shape == (600, 3, 32, 32) and x.min() >= 0 and x.max() <= 1
    assert torch.bincount(y).min() > 150
    x2, y2 = data.traffic_lights("test")
    assert torch.equal(x, x2) and torch.equal(y, y2)
    xa, _ = data.traffic_lights("train", n=600)
    assert not torch.equal(xa, x)
    # the lit lamp is the brightest of the three in its colour: red images are redder on top
    red, green = x[y == 0], x[y == 2]
    assert red[:, 0].mean() > green[:, 0].mean() and green[:, 1].mean() > red[:, 1].mean()


def test_load_embedded_and_errors():
    assert torch.equal(data.load("digits", "test")[0], data.digits("test")[0])
    assert data.load("traffic-lights", "test")[0].shape[1] == 3
    with pytest.raises(ValueError, match="name must be one of"):
        data.load("imagenet")


def test_load_torchvision_sets_fail_clearly_without_torchvision(monkeypatch, tmp_path):
    import builtins

    real_import = builtins.__import__

    def broken(name, *a, **k):  # as PyPI's torchvision does beside the CPU torch
        if name.startswith("torchvision"):
            raise RuntimeError("operator torchvision::nms does not exist")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", broken)
    with pytest.raises(RuntimeError, match="needs torchvision.*vision"):
        data.load("cifar10", root=tmp_path)


def test_loader_is_reproducible():
    x, y = data.digits("test")
    a = [b[1] for b in data.loader(x, y, batch_size=50, shuffle=True, seed=3)]
    b = [b[1] for b in data.loader(x, y, batch_size=50, shuffle=True, seed=3)]
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    with pytest.raises(ValueError, match="same length"):
        data.loader(x, y[:10])
    # issue 15: shuffle="no" shuffled, and a bad seed failed inside torch
    with pytest.raises(TypeError, match="shuffle must be True or False, got str"):
        data.loader(x, y, shuffle="no")
    with pytest.raises(TypeError, match="seed must be an int, got str"):
        data.loader(x, y, shuffle=True, seed="3")


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(n=2.5), TypeError, "n must be an int, got float"),
    (dict(n=0), ValueError, "n must be > 0, got 0"),
    (dict(size=0), ValueError, "size must be > 0, got 0"),
    (dict(size=-4), ValueError, "size must be > 0, got -4"),
    (dict(size=1), ValueError, r"size must be >= 8 \(smaller, the three lamps"),
    (dict(size=7), ValueError, "size must be >= 8"),
    (dict(size=8.0), TypeError, "size must be an int, got float"),
])
def test_traffic_lights_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        data.traffic_lights("test", **kwargs)


def test_traffic_lights_smallest_size_shows_the_lit_lamp():
    """At the smallest size the lit lamp still shows: red images are redder on top."""
    x, y = data.traffic_lights("test", size=data.TRAFFIC_LIGHT_MIN_SIZE)
    assert x.shape[-2:] == (8, 8)
    top, bottom = x[:, :, :4], x[:, :, 4:]
    red, green = y == 0, y == 2
    assert top[red, 0].mean() > top[green, 0].mean()
    assert bottom[green, 1].mean() > bottom[red, 1].mean()


def test_colour_digits():
    """Deterministic, in range, all ten classes, train and test different; each image shows its
    digit: the ink (the source glyph placed as the generator places it) is lighter."""
    x, y = data.colour_digits("test")
    assert x.shape == (1000, 3, 32, 32) and x.dtype == torch.float32
    assert y.dtype == torch.long and x.min() >= 0 and x.max() <= 1
    assert torch.bincount(y, minlength=10).min() > 60
    x2, y2 = data.colour_digits("test")
    assert torch.equal(x, x2) and torch.equal(y, y2)
    xa, _ = data.colour_digits("train", n=1000)
    assert not torch.isclose(xa, x).flatten(1).all(1).any(), "a test image repeats in train"
    xs, _ = data.colour_digits("test", seed=1)
    assert not torch.equal(xs, x)
    assert data.colour_digits("train", n=7, size=20)[0].shape == (7, 3, 20, 20)
    assert torch.equal(data.load("colour-digits", "test")[0], x)


def test_colour_digits_classes_differ_where_the_strokes_are():
    """A 0 has its hole where a 1 has its stroke: the image centre is brighter, relative to
    the image, for ones than for zeros (the glyphs are centred up to a small shift)."""
    x, y = data.colour_digits("test")
    grey = x.mean(1)
    centre = grey[:, 13:19, 13:19].mean((1, 2)) - grey.mean((1, 2))
    assert centre[y == 1].mean() > centre[y == 0].mean() + 0.05


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(n=2.5), TypeError, "n must be an int, got float"),
    (dict(n=0), ValueError, "n must be > 0, got 0"),
    (dict(size=0), ValueError, "size must be > 0, got 0"),
    (dict(size=15), ValueError, r"size must be >= 16 \(smaller, a digit's strokes"),
    (dict(size=32.0), TypeError, "size must be an int, got float"),
])
def test_colour_digits_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        data.colour_digits("test", **kwargs)
    with pytest.raises(ValueError, match="split must be 'train' or 'test', got 'val'"):
        data.colour_digits("val")


# issue 15: seed='a' and None failed with a raw TypeError on `seed * 2`, True passed as seed 1
@pytest.mark.parametrize("make", [data.traffic_lights, data.colour_digits])
@pytest.mark.parametrize("seed, error, message", [
    ("a", TypeError, "seed must be an int, got str"),
    (None, TypeError, "seed must be an int, got NoneType"),
    (True, TypeError, "seed must be an int, got bool"),
    (1.0, TypeError, "seed must be an int, got float"),
    (-1, ValueError, r"seed must lie in \[0, 2\*\*32\), got -1"),
    (2**32, ValueError, r"seed must lie in \[0, 2\*\*32\), got 4294967296"),
])
def test_generated_sets_check_the_seed(make, seed, error, message):
    with pytest.raises(error, match=message):
        make("test", n=4, seed=seed)


def test_load_with_download_false_never_asks_torchvision_to_download(monkeypatch, tmp_path):
    """The lessons load MNIST with download=False: the files or nothing, never a network."""
    import sys
    import types

    seen = {}

    class MNIST:
        def __init__(self, root, train, download):
            seen.update(root=root, train=train, download=download)
            raise RuntimeError("Dataset not found.")

    fake = types.ModuleType("torchvision")
    fake.datasets = types.SimpleNamespace(MNIST=MNIST)
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", fake.datasets)
    with pytest.raises(RuntimeError, match="download=False"):
        data.load("mnist", "test", root=tmp_path, download=False)
    assert seen == {"root": str(tmp_path), "train": False, "download": False}
    with pytest.raises(TypeError, match="download"):
        data.load("mnist", download="no")

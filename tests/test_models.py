import json
import shutil

import pytest
import torch

from robustlab import data, models
from robustlab.train import evaluate


def test_zoo_accuracies():
    xt = data.digits("test")
    assert evaluate(models.pretrained("digits-mlp"), xt) >= 0.95
    assert evaluate(models.pretrained("digits-cnn"), xt) >= 0.97
    assert evaluate(models.pretrained("digits-resnet"), xt) >= 0.97
    assert evaluate(models.pretrained("traffic-cnn"), data.traffic_lights("test")) >= 0.97


def test_zoo_matches_manifest_and_is_small():
    man = models.manifest()
    assert set(man) == set(models.ARCHITECTURES)
    root = models.resources.files("robustlab") / "weights"
    assert sum((root / e["file"]).stat().st_size for e in man.values()) < 5e6
    m = models.pretrained("digits-mlp")
    assert not m.training
    assert abs(evaluate(m, data.digits("test")) - man["digits-mlp"]["test_accuracy"]) < 1e-3


def test_unknown_model():
    with pytest.raises(ValueError, match="name must be one of .* got 'nope'"):
        models.pretrained("nope")


@pytest.fixture
def fake_weights(tmp_path, monkeypatch):
    """A copy of the packaged weights folder that a test may damage."""
    src = models.resources.files("robustlab") / "weights"
    dst = tmp_path / "robustlab" / "weights"
    shutil.copytree(src, dst)

    class Files:
        def joinpath(self, *parts):
            return tmp_path.joinpath("robustlab", *parts)

    monkeypatch.setattr(models.resources, "files", lambda pkg: Files())
    return dst


def flip_a_byte(path) -> None:
    """Damage a weights file: one byte near its end inverted."""
    blob = bytearray(path.read_bytes())
    blob[-10] ^= 0xFF
    path.write_bytes(bytes(blob))


def test_tampered_weights_are_refused(fake_weights):
    flip_a_byte(fake_weights / "digits-cnn.pt")
    with pytest.raises(RuntimeError, match="sha256"):
        models.pretrained("digits-cnn")
    models.pretrained("digits-mlp")  # the others still load


def test_missing_weights_file(fake_weights):
    (fake_weights / "digits-cnn.pt").unlink()
    with pytest.raises(FileNotFoundError, match="missing"):
        models.pretrained("digits-cnn")


def test_pickle_payload_is_not_executed(fake_weights):
    """weights_only=True: a checkpoint carrying arbitrary objects does not load even when its
    checksum was updated to match."""
    import io

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    buf = io.BytesIO()
    torch.save({"x": Evil()}, buf)
    (fake_weights / "digits-mlp.pt").write_bytes(buf.getvalue())
    man = json.loads((fake_weights / "manifest.json").read_text())
    man["digits-mlp"]["sha256"] = models.sha256(buf.getvalue())
    (fake_weights / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(Exception, match="(?i)weights only|unsupported|global"):
        models.pretrained("digits-mlp")


def test_normalize():
    n = models.Normalize([0.5, 0.25], [0.5, 0.25])
    x = torch.rand(2, 2, 3, 3)
    assert torch.allclose(n(x)[:, 0], (x[:, 0] - 0.5) / 0.5)
    with pytest.raises(ValueError, match="std must be > 0"):
        models.Normalize([0.0], [0.0])


@pytest.mark.parametrize("name", sorted(models.ARCHITECTURES))
def test_architectures_return_logits(name):
    m = models.ARCHITECTURES[name]()
    x = torch.rand(3, 3, 32, 32) if name.startswith(("traffic", "colour")) else torch.rand(3, 1, 8, 8)
    out = m(x)
    assert out.shape == (3, 3 if name.startswith("traffic") else 10)


def test_manifest_that_is_not_json(fake_weights):
    (fake_weights / "manifest.json").write_text('{"digits-mlp": {"file": ')
    with pytest.raises(ValueError, match=r"zoo manifest .*manifest\.json is not valid JSON"):
        models.pretrained("digits-mlp")
    (fake_weights / "manifest.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"manifest\.json must hold a JSON object"):
        models.manifest()


def _edit_manifest(weights, name: str, **fields) -> None:
    """Change (or, with None, delete) fields of one manifest entry."""
    man = json.loads((weights / "manifest.json").read_text())
    man[name].update(fields)
    man[name] = {k: v for k, v in man[name].items() if v is not None}
    (weights / "manifest.json").write_text(json.dumps(man))


@pytest.mark.parametrize("field", ["sha256", "file"])
def test_manifest_entry_lacking_a_field(fake_weights, field):
    _edit_manifest(fake_weights, "digits-cnn", **{field: None})
    with pytest.raises(ValueError, match=rf"manifest\.json, entry 'digits-cnn' lacks '{field}'"):
        models.pretrained("digits-cnn")
    models.pretrained("digits-mlp")  # the other entries still load


@pytest.mark.parametrize("file", ["../digits-cnn.pt", "sub/../../x.pt", "..\\x.pt", "/etc/passwd",
                                  "C:\\weights\\x.pt"])
def test_manifest_file_escaping_weights_is_refused(fake_weights, file):
    """Even with a matching checksum: the manifest may only point inside weights/."""
    outside = fake_weights.parent / "digits-cnn.pt"
    outside.write_bytes((fake_weights / "digits-cnn.pt").read_bytes())
    _edit_manifest(fake_weights, "digits-cnn", file=file)
    with pytest.raises(ValueError, match="escapes weights/: refusing it"):
        models.pretrained("digits-cnn")


def test_pooled_cnn_takes_any_image_size():
    """Global average pooling: the same weights classify 16x16 and 32x32 images."""
    m = models.PooledCNN(3, 10, width=4)
    assert m(torch.rand(2, 3, 16, 16)).shape == m(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_a_refused_weights_file_never_gets_torch_advice(monkeypatch):
    """A file that passes its checksum but holds more than tensors is refused without torch's
    advice to retry with weights_only=False (issue 15, item 12)."""
    import pickle

    from robustlab import models

    def refuse(*args, **kwargs):
        raise pickle.UnpicklingError("Weights only load failed. Re-running `torch.load` with "
                                     "`weights_only` set to `False` will likely succeed.\n Please "
                                     "file an issue. WeightsUnpickler error: Unsupported global: "
                                     "GLOBAL os.system\n\nCheck the documentation")
    monkeypatch.setattr(models.torch, "load", refuse)
    with pytest.raises(RuntimeError, match="os.system") as err:
        models.pretrained("digits-mlp")
    assert "weights_only" not in str(err.value) and "likely succeed" not in str(err.value)

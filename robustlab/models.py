"""Models of the course: a normalisation layer, an MLP, two small CNNs, a small ResNet, the zoo.

All models take pixel-space images in [0, 1] and return logits ``(N, K)``; normalisation is a
layer inside the model, so attacks never need to know about it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from importlib import resources
from pathlib import PurePosixPath, PureWindowsPath

import torch
from torch import nn

WEIGHTS = "weights"


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` as the first layer of a model."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        mean, std = torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)
        if mean.shape != std.shape or mean.dim() != 1:
            raise ValueError(f"mean and std must be 1-D of equal length, got {tuple(mean.shape)} "
                             f"and {tuple(std.shape)}")
        if (std <= 0).any():
            raise ValueError(f"std must be > 0, got {std.tolist()}")
        self.register_buffer("mean", mean.view(1, -1, 1, 1))
        self.register_buffer("std", std.view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class MLP(nn.Sequential):
    """Flatten, then fully connected layers with ReLU: the network verifiers handle best."""

    def __init__(self, in_shape: Sequence[int] = (1, 8, 8), hidden: Sequence[int] = (64, 32),
                 num_classes: int = 10, dropout: float = 0.0):
        layers: list[nn.Module] = [nn.Flatten()]
        width = int(torch.tensor(in_shape).prod())
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, num_classes))
        super().__init__(*layers)


class SmallCNN(nn.Sequential):
    """Two conv blocks (conv-ReLU-conv-ReLU-maxpool) and a two-layer classifier head."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 16,
                 image_size: int = 8, hidden: int = 64):
        c = width
        side = image_size // 4
        super().__init__(
            nn.Conv2d(in_channels, c, 3, padding=1), nn.ReLU(),
            nn.Conv2d(c, c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c, 2 * c, 3, padding=1), nn.ReLU(),
            nn.Conv2d(2 * c, 2 * c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(2 * c * side * side, hidden), nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class PooledCNN(nn.Sequential):
    """Four conv-BatchNorm-ReLU layers (w, 2w, 2w, 4w channels, 2x2 max-pooling after the first
    and the third), global average pooling and a linear head: any image size, few weights."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, width: int = 16):
        w = width
        super().__init__(
            *_conv_bn_relu(in_channels, w), nn.MaxPool2d(2),
            *_conv_bn_relu(w, 2 * w), *_conv_bn_relu(2 * w, 2 * w), nn.MaxPool2d(2),
            *_conv_bn_relu(2 * w, 4 * w), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(4 * w, num_classes),
        )


class BasicBlock(nn.Module):
    """He et al. (CVPR 2016) residual block: relu(bn(conv(relu(bn(conv x)))) + shortcut x)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class SmallResNet(nn.Module):
    """A three-stage ResNet (one BasicBlock a stage), global average pooling, linear head."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 16):
        super().__init__()
        w = width
        self.stem = nn.Sequential(nn.Conv2d(in_channels, w, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(w), nn.ReLU())
        self.blocks = nn.Sequential(BasicBlock(w, w), BasicBlock(w, 2 * w, 2),
                                    BasicBlock(2 * w, 4 * w, 2))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


# The zoo: how each model is built. Weights and their sha256 live in robustlab/weights/,
# written by `python -m robustlab.zoo build` (see robustlab/zoo.py for the training recipes).
ARCHITECTURES = {
    "digits-mlp": lambda: MLP((1, 8, 8), (64, 32), 10),
    "digits-cnn": lambda: SmallCNN(1, 10, width=16, image_size=8),
    "digits-resnet": lambda: SmallResNet(1, 10, width=16),
    "traffic-cnn": lambda: nn.Sequential(Normalize([0.5] * 3, [0.25] * 3),
                                         SmallCNN(3, 3, width=16, image_size=32)),
    # a normally trained CNN on 32x32 colour digits (data.colour_digits): fooled by changes of
    # 1-4/255 that cannot be seen (lesson 01)
    "colour-digits-cnn": lambda: nn.Sequential(Normalize([0.5] * 3, [0.25] * 3), PooledCNN(3, 10, 16)),
    # robust versions of digits-cnn: PGD-AT, TRADES, Gaussian-noise training (for smoothing)
    "digits-cnn-pgd": lambda: SmallCNN(1, 10, width=16, image_size=8),
    "digits-cnn-trades": lambda: SmallCNN(1, 10, width=16, image_size=8),
    "digits-cnn-noise": lambda: SmallCNN(1, 10, width=16, image_size=8),
    # the digits MLP trained with IBP (robustlab.verify.ibp): certified at eps 0.1 (zoo.py)
    "digits-mlp-ibp": lambda: MLP((1, 8, 8), (64, 32), 10),
}


MANIFEST = "manifest.json"  # the image models; robustlab.zoo_beyond keeps its own beside it


def _manifest_path(file: str = MANIFEST):
    return resources.files("robustlab").joinpath(WEIGHTS, file)


def manifest(file: str = MANIFEST) -> dict:
    """The zoo manifest: for each model its file, sha256, dataset, recipe and test accuracy.

    A manifest that is not a JSON object raises a ValueError naming the file; the fields of
    one entry are checked when that model is loaded (`pretrained`), so one bad entry does not
    stop the others from loading. `file` names another manifest in weights/ (the models beyond
    images of `robustlab.zoo_beyond`).
    """
    path = _manifest_path(file)
    if not path.is_file():
        return {}
    try:
        entries = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"zoo manifest {path} is not valid JSON ({e}): restore it or run "
                         f"`python -m robustlab.zoo build`") from None
    if not isinstance(entries, dict):
        raise ValueError(f"zoo manifest {path} must hold a JSON object (model name -> entry), "
                         f"got a {type(entries).__name__}")
    return entries


def _checked_entry(name: str, entry, file: str = MANIFEST) -> dict:
    """The manifest entry of `name` with a `file` inside weights/ and a `sha256`, or raise."""
    where = f"zoo manifest {_manifest_path(file)}, entry {name!r}"
    if not isinstance(entry, dict):
        raise ValueError(f"{where} must be a JSON object, got {type(entry).__name__}")
    for field in ("file", "sha256"):
        if not isinstance(entry.get(field), str) or not entry[field]:
            raise ValueError(f"{where} lacks {field!r} (a non-empty string)")
    file = entry["file"]
    # the file must stay inside weights/: no absolute path, drive or parent step, in either
    # path flavour (a manifest written on Windows may use backslashes)
    posix = PurePosixPath(file.replace("\\", "/"))
    if posix.is_absolute() or PureWindowsPath(file).drive or ".." in posix.parts:
        raise ValueError(f"{where} has file {file!r}, which escapes {WEIGHTS}/: refusing it")
    return entry


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def without_torch_advice(err: BaseException) -> str:
    """The message of a failed `torch.load`, cut to what was refused.

    torch's weights_only refusal advises that loading with weights_only=False "will likely
    succeed": advice that runs an untrusted file's code, never to be repeated for a file the
    library refuses. Only the unpickler's reason (the global or operand it refused) is kept;
    a message without that advice is returned whole."""
    text = str(err)
    if "weights_only" not in text:
        return text
    if "WeightsUnpickler error:" not in text:
        return f"{type(err).__name__} (torch's weights_only loader refused it)"
    reason = text.split("WeightsUnpickler error:", 1)[1].strip().split("\n", 1)[0]
    return reason.split(". ", 1)[0].rstrip(".")


def checked_state(name: str, file: str = MANIFEST) -> dict[str, torch.Tensor]:
    """The state dict of zoo model `name`, as its entry in the manifest `file` names it: the
    weights file must exist inside weights/, match its sha256 and hold tensors only
    (``torch.load(weights_only=True)``, so nothing is unpickled); else a clear error."""
    entry = manifest(file).get(name)
    if entry is None:
        raise FileNotFoundError(f"the zoo has no weights for {name!r} yet: run "
                                f"`python -m robustlab.zoo build {name}`")
    entry = _checked_entry(name, entry, file)
    path = resources.files("robustlab").joinpath(WEIGHTS, entry["file"])
    if not path.is_file():
        raise FileNotFoundError(f"weights file {entry['file']} for {name!r} is missing: reinstall "
                                f"robustlab or run `python -m robustlab.zoo build {name}`")
    data = path.read_bytes()
    if sha256(data) != entry["sha256"]:
        raise RuntimeError(f"weights file {entry['file']} for {name!r} fails its sha256 check "
                           f"(corrupted or tampered); refusing to load it")
    import io
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # a file that passes its checksum but holds more than tensors
        raise RuntimeError(f"weights file {entry['file']} for {name!r} was refused: "
                           f"{without_torch_advice(err)}") from None


def pretrained(name: str, *, device: str | torch.device = "cpu") -> nn.Module:
    """A trained model from the zoo, in eval mode, checked against its sha256.

    The weights are built by the project's own script (``python -m robustlab.zoo build``),
    shipped inside the package and loaded with ``torch.load(weights_only=True)``, so nothing
    is unpickled. A file whose checksum does not match the manifest is refused
    (`checked_state`).

    The device defaults to the CPU on purpose, not to `default_device()`: `robustlab.data`
    loads on the CPU, so the model and the data agree without a word, and the lessons and tests
    compare results with CPU numbers. Ask for a GPU with ``device=default_device()`` (as the
    lessons and the command line's ``--device`` do).

    Arguments:
        name: a model of the zoo (`ARCHITECTURES`).
        device: where the model is put.
    """
    if name not in ARCHITECTURES:
        raise ValueError(f"name must be one of {sorted(ARCHITECTURES)}, got {name!r}")
    model = ARCHITECTURES[name]()
    model.load_state_dict(checked_state(name))
    return model.eval().to(device)

"""The network reader: it reproduces every model it reads and names whatever it cannot read."""

import pytest
import torch
from torch import nn

from robustlab import models
from robustlab.verify import crown, interval, read_network
from robustlab.verify.network import ChannelAffine, Conv, Dense, MaxPool, ReLU

from .conftest import small_nets


@pytest.mark.parametrize("name", list(small_nets()))
def test_reader_reproduces_random_nets(name, eight):
    model = small_nets()[name]
    x = eight[0]
    net = read_network(model, x.shape[1:])
    with torch.no_grad():
        torch.testing.assert_close(net(x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["digits-mlp", "digits-cnn", "traffic-cnn"])
def test_reader_reproduces_the_zoo(name, eight):
    model = models.pretrained(name)
    x = eight[0]
    if name == "traffic-cnn":
        x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    net = read_network(model, x.shape[1:])
    with torch.no_grad():
        torch.testing.assert_close(net(x), model(x), rtol=1e-5, atol=1e-4)


def test_reader_folds_batch_norm_and_flatten():
    net = read_network(small_nets()["conv-bn-avgpool"], (1, 8, 8))
    kinds = [type(layer) for layer in net.layers]
    # Normalize stays (zero padding follows it); BatchNorm folds into the conv and linear
    # before it; Flatten folds into the linear after it; AvgPool is a depthwise conv
    assert kinds == [ChannelAffine, Conv, ReLU, Conv, Conv, ReLU, Dense, ReLU, Dense]
    mlp = read_network(models.pretrained("digits-mlp"), (1, 8, 8))
    assert [type(layer) for layer in mlp.layers] == [Dense, ReLU, Dense, ReLU, Dense]
    cnn = read_network(models.pretrained("digits-cnn"), (1, 8, 8))
    assert sum(isinstance(layer, MaxPool) for layer in cnn.layers) == 2


def test_resnet_is_refused_naming_its_residual_block():
    with pytest.raises(ValueError, match=r"SmallResNet.*residual block BasicBlock at 'SmallResNet.blocks.0'"):
        read_network(models.SmallResNet(), (1, 8, 8))
    with pytest.raises(ValueError, match="SmallResNet"):
        crown(models.SmallResNet().eval(), torch.rand(1, 1, 8, 8), eps=0.1)


@pytest.mark.parametrize("layer, pattern", [
    (nn.Tanh(), r"Tanh at 'Sequential.2'"),
    (nn.LeakyReLU(), r"LeakyReLU at 'Sequential.2'"),
    (nn.MaxPool1d(2), r"MaxPool1d at 'Sequential.2'"),
])
def test_unsupported_layers_are_named(layer, pattern):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), layer, nn.Linear(10, 3))
    with pytest.raises(ValueError, match=f"verify reads sequential networks of Linear/Conv2d.*{pattern}"):
        interval(model, torch.rand(2, 1, 8, 8), eps=0.1)


class Custom(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(64, 3), nn.Linear(64, 3)

    def forward(self, x):
        return self.a(x.flatten(1)) + self.b(x.flatten(1))


@pytest.mark.parametrize("model, pattern", [
    (Custom(), "Custom at 'Custom': it has its own forward"),
    (nn.Sequential(nn.Linear(8, 3)), "Linear at 'Sequential.0': it gets input of shape"),
    (nn.Sequential(nn.Flatten(), nn.Linear(64, 4), nn.BatchNorm1d(4, track_running_stats=False)),
     "BatchNorm1d at 'Sequential.2': it has no running statistics"),
    (nn.Sequential(nn.Conv2d(1, 2, 3, padding="same")), "Conv2d at 'Sequential.0'"),
    (nn.Sequential(nn.AvgPool2d(3, ceil_mode=True), nn.Flatten()), "AvgPool2d at 'Sequential.0'"),
])
def test_structures_the_reader_cannot_take_are_named(model, pattern):
    with pytest.raises(ValueError, match=pattern):
        read_network(model, (1, 8, 8))


def test_model_must_return_flat_logits():
    with pytest.raises(ValueError, match=r"logits \(N, K\)"):
        read_network(nn.Sequential(nn.Conv2d(1, 2, 3)), (1, 8, 8))
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        read_network(lambda x: x, (1, 8, 8))

"""The host-sync counter of tests/syncs.py counts what it claims, once each, and restores torch."""

import torch

from tests.syncs import HostSyncs, explain, grows


def test_counts_each_kind_of_host_sync_once():
    x = torch.rand(5)
    with HostSyncs() as s:
        x.sum().item()
        bool(x[0] > 0.5)
        _ = x[x > 0.5]
        x[x > 2] = 0
        float(x[0])
        x.tolist()
        torch.nonzero(x)
        x.cpu()
    assert [what for what, _ in s.calls] == ["item", "__bool__", "__getitem__", "__setitem__",
                                            "__float__", "tolist", "nonzero", "cpu"]


def test_device_side_work_is_not_counted():
    x = torch.rand(5)
    with HostSyncs() as s:
        y = torch.where(x > 0.5, x, 0.0).clamp(0, 1) * 2
        _ = y[1:3], y[torch.tensor([0, 2])]
        (x > 0.5).any()
    assert s.total == 0


def test_restores_torch_and_names_growing_sites():
    original = torch.Tensor.item
    a, b = grows(lambda n: [torch.rand(1).item() for _ in range(n)], 1, 3)
    assert torch.Tensor.item is original
    assert (a.total, b.total) == (1, 3)
    assert "1 -> 3" in explain(a, b)

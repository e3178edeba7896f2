"""Where random draws happen: on the generator's own device, so a CUDA generator works too.

Results are device-independent only with a CPU generator: the CPU and CUDA random streams
differ, so a CUDA generator (or none, with data on a GPU, which draws from the global CUDA
stream there) gives other draws than a CPU generator with the same seed.
"""

from __future__ import annotations

import torch


def draw_device(generator: torch.Generator | None, default: torch.device | str = "cpu") -> torch.device:
    """The device to draw on: the generator's own, or `default` (the data's) without one."""
    return torch.device(default) if generator is None else generator.device

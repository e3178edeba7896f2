"""Where random draws happen: the one rule every random method of the library follows.

- With a generator, draws happen on the generator's own device, then move to the data's. A CPU
  generator (``robustlab.generator(seed)``, the default) is the reproducible-across-devices
  mode: the same seed gives the same numbers whether the data is on the CPU or a GPU, at the
  cost of a host-to-device copy of each draw. ``robustlab.generator(seed, device=x.device)``
  draws on the GPU itself (no copy; the right choice for big draws such as CERTIFY's noise),
  reproducible on that device only, since CUDA's stream gives other numbers than the CPU's.
- Without a generator, draws happen on the data's device, from that device's global stream
  (seeded by ``robustlab.seed_everything``).

A method reads the draw's device from `draw_device` and never pins it to the CPU itself.
"""

from __future__ import annotations

import torch


def draw_device(generator: torch.Generator | None, default: torch.device | str) -> torch.device:
    """The device to draw on: the generator's own, or `default` without one.

    Arguments:
        generator: the caller's generator, or None.
        default: the data's device, where a draw without a generator happens by the rule
            above.
    """
    return torch.device(default) if generator is None else generator.device

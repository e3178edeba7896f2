"""Attacks on audio classifiers, bounded in decibels relative to the clip (Carlini & Wagner,
"Audio adversarial examples: targeted attacks on speech-to-text", 2018), and their over-the-air
variant with expectation over simulated rooms (Qin et al., ICML 2019; Yakura & Sakuma, IJCAI 2019).

Waveforms are (N, C, T) in [-1, 1] (`robustlab.audio_data`), models return logits (N, K). The
distortion measure is dB_x(delta) = dB(delta) - dB(x), with dB(x) = 20 log10 max_t |x_t|: how much
quieter the perturbation's loudest sample is than the clip's. Each attack keeps dB_x(delta) <= tau
and x + delta in [-1, 1] on every output, leaves the model as found, and runs its loop on the
device without reading anything back to the host.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .._checks import check_bool, check_choice, check_generator, check_in_range, check_labels, check_positive
from .._model import check_model, check_model_input, frozen, logits_of, plain, predict
from .._random import draw_device
from ..audio_data import SAMPLE_RATE
from ..losses import LOSSES, is_fooled
from ..norms import flat_norm, per_example
from ..tables import Tabular, markdown_table

__all__ = ["AudioAttackResult", "audio_attack", "audio_eot", "audio_universal", "db", "relative_db",
           "room_impulse", "room_success_rate", "simulate_room"]


def check_audio(x, name: str = "x") -> torch.Tensor:
    """Waveforms (N, C, T), float32 or float64, in [-1, 1], no NaN, none of them silent."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of waveforms, got {type(x).__name__}")
    if x.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{name} must be float32 or float64 waveforms, got dtype {x.dtype}")
    if x.dim() != 3 or 0 in x.shape:
        raise ValueError(f"{name} must have shape (N, channels, T), got {tuple(x.shape)}")
    peak = x.flatten(1).abs().amax(1)
    low, high = torch.stack(torch.aminmax(peak)).tolist()  # one read back; NaN propagates
    if math.isnan(high):
        raise ValueError(f"{name} contains NaN")
    if high > 1:
        raise ValueError(f"{name} is clipped audio: samples must lie in [-1, 1], got a peak of {high:.3g}")
    if low == 0:
        raise ValueError(f"{name} holds a silent clip (all zeros): its dB is -inf, so no bound "
                         f"relative to it exists")
    return x


def db(x: torch.Tensor) -> torch.Tensor:
    """Loudness of each example in decibels, dB(x) = 20 log10 max_t |x_t| (N,).

    Carlini & Wagner (2018), section 3. All zeros give -inf.
    """
    if not isinstance(x, torch.Tensor) or x.dim() < 2 or not x.is_floating_point():
        raise TypeError("x must be a floating tensor of shape (N, ...)")
    return 20 * torch.log10(flat_norm(x, "linf"))


def relative_db(delta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Distortion of `delta` relative to the clip `x`, dB_x(delta) = dB(delta) - dB(x) (N,).

    Carlini & Wagner (2018), section 3: -20 for delta = x / 10; -inf for delta = 0.

    Args:
        delta: perturbations (N, C, T).
        x: the clips they perturb (N, C, T), none silent.
    """
    check_audio(x)
    if not isinstance(delta, torch.Tensor) or delta.shape != x.shape or not delta.is_floating_point():
        raise ValueError(f"delta must be a floating tensor of x's shape {tuple(x.shape)}")
    return db(delta) - db(x)


def _pair(value, name: str, low: float) -> tuple[float, float]:
    """A number, or a (low, high) range to draw from uniformly, every end above `low`."""
    lo, hi = value if isinstance(value, (tuple, list)) and len(value) == 2 else (value, value)
    check_in_range(lo, name, low, math.inf, low_open=True, high_open=True)
    check_in_range(hi, name, lo, math.inf, high_open=True)
    return float(lo), float(hi)


def _uniform(n: int, bounds: tuple[float, float], generator, device) -> torch.Tensor:
    lo, hi = bounds
    return torch.rand(n, 1, generator=generator, device=device) * (hi - lo) + lo


def room_impulse(n: int, *, sample_rate: int = SAMPLE_RATE, rt60=(0.05, 0.3), drr_db=(3.0, 12.0),
                 length: int | None = None, generator: torch.Generator | None = None,
                 device: str | torch.device | None = None) -> torch.Tensor:
    """`n` synthetic room impulse responses (n, length), each of unit energy.

    A direct path (a unit impulse after a delay of up to 2 ms) and a reverberant tail of Gaussian
    noise decaying as exp(-6.91 t / RT60), i.e. by 60 dB in RT60 seconds (Sabine's reverberation
    time), scaled so direct-to-reverberant energy is `drr_db`: a statistical room model, in
    the spirit of the simulated rooms of Qin et al. (ICML 2019).

    Args:
        rt60: reverberation time in seconds, or a (low, high) range drawn per room.
        drr_db: direct-to-reverberant ratio in dB, or a (low, high) range drawn per room.
        length: taps; by default the longest RT60 in samples.
        generator: the random source; draws happen on its device, then move to `device` (the
            CPU by default).
    """
    check_positive(n, "n", integer=True)
    check_positive(sample_rate, "sample_rate", integer=True)
    rt, ratio = _pair(rt60, "rt60", 0.0), _pair(drr_db, "drr_db", -math.inf)
    check_generator(generator)
    max_delay = sample_rate // 500 + 1
    length = max(round(rt[1] * sample_rate), max_delay + 2) if length is None else length
    check_in_range(length, "length", max_delay + 2, math.inf, integer=True, high_open=True)
    device = torch.device("cpu") if device is None else torch.device(device)
    g = draw_device(generator, device)
    k = torch.arange(length, device=g)
    delay = torch.randint(0, max_delay, (n, 1), generator=generator, device=g)
    after = (k - delay) / (_uniform(n, rt, generator, g) * sample_rate)
    tail = torch.randn(n, length, generator=generator, device=g) * torch.exp(-6.91 * after) * (after > 0)
    reverb = 10 ** (-_uniform(n, ratio, generator, g) / 10)  # tail energy per unit direct energy
    h = tail * (reverb / tail.pow(2).sum(1, keepdim=True)).sqrt() + (k == delay)
    return (h / h.norm(dim=1, keepdim=True)).to(device)


def simulate_room(x: torch.Tensor, rir: torch.Tensor, *, noise_db: float | None = -40.0,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """What a microphone records when `x` plays in a room: x * h (convolution, truncated to x's
    length) plus Gaussian background noise of standard deviation 10^(noise_db / 20) max|x|,
    clipped to [-1, 1] as a recording is. Differentiable in `x` (an FFT convolution).

    Args:
        x: waveforms (N, C, T).
        rir: impulse responses (N, L), one per example, or (L,) for all (`room_impulse`).
        noise_db: noise level relative to each clip's peak; None for none.
        generator: the noise's random source (drawn on its device, moved to x's).
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        raise ValueError("x must be a tensor of waveforms (N, C, T)")
    shape_ok = isinstance(rir, torch.Tensor) and (rir.dim() == 1 or (rir.dim() == 2 and len(rir) == len(x)))
    if not shape_ok:
        raise ValueError(f"rir must have shape (L,) or ({len(x)}, L), got "
                         f"{tuple(rir.shape) if isinstance(rir, torch.Tensor) else type(rir).__name__}")
    if rir.device != x.device:
        raise ValueError(f"rir is on {rir.device} but x is on {x.device}")
    check_generator(generator)
    h = rir.to(x.dtype).view(-1, 1, rir.shape[-1])
    size = 1 << (x.shape[-1] + h.shape[-1] - 1).bit_length()  # no circular wrap-around
    wet = torch.fft.irfft(torch.fft.rfft(x, size) * torch.fft.rfft(h, size), size)[..., :x.shape[-1]]
    if noise_db is not None:
        level = 10 ** (check_in_range(noise_db, "noise_db", -math.inf, math.inf, low_open=True,
                                      high_open=True) / 20)
        noise = torch.randn(x.shape, generator=generator, device=draw_device(generator, x.device))
        wet = wet + level * per_example(flat_norm(x.detach(), "linf"), x) * noise.to(x)
    return wet.clamp(-1, 1)


@dataclass
class AudioAttackResult(Tabular):
    """What an audio attack found, per example: the adversarial clips ``x_adv``, whether each
    reached its goal (``success``), the class the model now gives (``predicted``, in the quiet
    room), its distortion ``db`` = dB_x(x_adv - x) and ``bound_db``, the bound that held when it
    was found (tau, or the tightened bound after a success). ``db <= bound_db <= tau_db``.
    ``delta`` is the one perturbation of `audio_universal` (None for the per-clip attacks)."""

    attack: str
    x_adv: torch.Tensor
    y: torch.Tensor
    success: torch.Tensor
    predicted: torch.Tensor
    db: torch.Tensor
    bound_db: torch.Tensor
    tau_db: float
    delta: torch.Tensor | None = None

    @property
    def success_rate(self) -> float:
        return self.success.float().mean().item()

    def table(self) -> str:
        rows = [[i, *r] for i, r in enumerate(zip(self.y.tolist(), self.predicted.tolist(),
                                                   self.success.tolist(), self.db.tolist(),
                                                   self.bound_db.tolist()))]
        head = (f"{self.attack}: success {self.success_rate:.3f} with dB_x(delta) <= "
                f"{self.tau_db:g}\n\n")
        return head + markdown_table(["example", "y", "predicted", "success", "dB_x(delta)", "bound (dB)"],
                                     rows, decimals=[None, None, None, None, 2, 2])


def _checked(model, x, y, tau_db, steps, lr, targeted, shrink, loss):
    check_model(model)
    x = plain(check_audio(x))
    check_model_input(model, x)
    check_in_range(tau_db, "tau_db", -math.inf, 0.0, low_open=True, high_open=True)
    check_positive(steps, "steps", integer=True)
    check_positive(lr, "lr")
    check_bool(targeted, "targeted")
    check_in_range(shrink, "shrink", 0.0, 1.0, low_open=True)
    check_choice(loss, ("ce", "margin"), "loss")
    return x, check_labels(y, x)


def _descend(x, objective, *, tau_db, steps, lr, shrink):
    """Adam on u with delta = b * u, |u| <= 1, minimising the summed objective; b per example.

    b starts at 10^(tau/20) max|x| (so dB_x(delta) <= tau). At every step where an example
    succeeds, its iterate is kept and b tightens to shrink * min(b, max|delta|), with delta
    clipped to it (C&W 2018, section 4: "reduce tau by a constant factor"). With shrink 1 the
    bound stays and the last successful iterate is kept: the most optimised, with most margin.
    Returns the kept (or, never successful, last) x + delta, whether it succeeded, and the
    bound it met.
    """
    fixed = shrink == 1
    eps = torch.finfo(x.dtype).eps  # rounding of (x + delta) - x stays below this when |x| <= 1
    peak = flat_norm(x, "linf")
    bound = 10 ** (tau_db / 20) * peak
    u = torch.zeros_like(x, requires_grad=True)
    opt = torch.optim.Adam([u], lr=lr)
    best, met = x.clone(), bound.clone()
    won = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    smallest = torch.full_like(peak, math.inf)  # max|delta| of the kept success
    for step in range(steps):
        xa = (x + per_example((bound - eps).clamp_min(0), x) * u).clamp(-1, 1)
        loss, ok = objective(xa, step == 0)
        opt.zero_grad()
        loss.sum().backward()
        with torch.no_grad():
            size = flat_norm(xa - x, "linf")
            keep = ok & ((size <= smallest) | fixed)
            best = torch.where(per_example(keep, x), xa, best)
            met, smallest = torch.where(keep, bound, met), torch.where(keep, size, smallest)
            won |= ok
            tight = bound if fixed else torch.where(ok, torch.minimum(bound, size) * shrink, bound)
            opt.step()
            # delta (not u) is what to keep: clip it to the new bound; a zero bound keeps delta 0
            scale = per_example(torch.where(tight > 0, bound / tight, 1.0), x)
            u.copy_((u * scale).clamp(-1, 1))
            bound = tight
    last = (x + per_example((bound - eps).clamp_min(0), x) * u.detach()).clamp(-1, 1)
    return torch.where(per_example(won, x), best, last), won, met, peak


def _result(name, model, x, y, xa, won, met, peak, tau_db, delta=None):
    with torch.no_grad():
        dist = db(xa - x) - db(x)  # relative_db, without its checks of x
        # the bound is 10^(tau/20) max|x| or tighter: its dB is <= tau, save for rounding
        bound = (20 * torch.log10(met / peak)).clamp(max=tau_db)
    return AudioAttackResult(name, xa, y, won, predict(model, xa).argmax(1), dist, bound, float(tau_db),
                             delta)


def audio_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, tau_db: float = -30.0,
                 steps: int = 200, lr: float = 0.05, targeted: bool = True, shrink: float = 0.8,
                 loss: str = "ce") -> AudioAttackResult:
    """Carlini & Wagner (2018)'s audio attack on a classifier: find delta minimising the loss of
    the target class (of `y`, or of anything but `y` when not `targeted`) of x + delta, subject to

        dB_x(delta) = dB(delta) - dB(x) <= tau   (section 3; i.e. max|delta| <= 10^(tau/20) max|x|)

    and x + delta in [-1, 1]; whenever an example succeeds, its bound tightens by `shrink`
    (their 0.8) and the search goes on, so each ends with about the quietest delta it found.
    (Their objective adds c ||delta||_2^2 to the loss; the tightening bound does that work here.)

    Args:
        x: waveforms (N, C, T) in [-1, 1], none silent; y: target classes (N,) when
            `targeted`, true classes otherwise.
        tau_db: the starting bound, < 0 dB.
        steps, lr: Adam steps and step size; lr is in units of the bound (delta = bound * u).
        shrink: factor on the bound after each success, in (0, 1]; 1 keeps tau fixed and
            returns the last successful iterate.
        loss: "ce" (cross-entropy) or "margin" (C&W's logit margin).
    """
    x, y = _checked(model, x, y, tau_db, steps, lr, targeted, shrink, loss)
    ascend = LOSSES[loss]

    def objective(xa, first):
        z = logits_of(model, xa, y) if first else model(xa)
        return -ascend(z, y, targeted), is_fooled(z.argmax(1), y, targeted)

    with frozen(model):
        xa, won, met, peak = _descend(x, objective, tau_db=tau_db, steps=steps, lr=lr, shrink=shrink)
    return _result("audio_attack", model, x, y, xa, won, met, peak, tau_db)


def audio_eot(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, tau_db: float = -30.0,
              steps: int = 200, lr: float = 0.05, targeted: bool = True, shrink: float = 1.0,
              loss: str = "ce", rooms: int = 8, min_rate: float = 0.8, rt60=(0.05, 0.3),
              drr_db=(3.0, 12.0), noise_db: float | None = -40.0, sample_rate: int = SAMPLE_RATE,
              generator: torch.Generator | None = None) -> AudioAttackResult:
    """The dB-bounded attack of `audio_attack` made to survive playing over the air: each step
    minimises the loss averaged over `rooms` fresh random rooms and noises (expectation over
    transformation), after Qin et al. (ICML 2019) and Yakura & Sakuma (IJCAI 2019):

        min_delta  E_{h, n} [ loss(clip((x + delta) * h + n), y) ]   s.t. dB_x(delta) <= tau.

    An example counts as a success at a step when at least `min_rate` of that step's rooms
    give the goal; only then does its bound tighten by `shrink`. By default it does not (shrink
    1): a bound tightened at each success leaves delta just strong enough for the rooms it was
    tried in, and unseen rooms then undo it. Rooms come from
    `room_impulse(rt60, drr_db)` and `simulate_room(noise_db)`, drawn with `generator`.
    Other arguments as in `audio_attack`.
    """
    x, y = _checked(model, x, y, tau_db, steps, lr, targeted, shrink, loss)
    check_positive(rooms, "rooms", integer=True)
    check_in_range(min_rate, "min_rate", 0.0, 1.0, low_open=True)
    check_generator(generator)
    ascend, n = LOSSES[loss], len(x)
    room_impulse(1, sample_rate=sample_rate, rt60=rt60, drr_db=drr_db)  # check the room settings once
    ys = y.repeat(rooms)

    def objective(xa, first):
        rir = room_impulse(rooms * n, sample_rate=sample_rate, rt60=rt60, drr_db=drr_db,
                           generator=generator, device=x.device)
        heard = simulate_room(xa.repeat(rooms, 1, 1), rir, noise_db=noise_db, generator=generator)
        z = logits_of(model, heard, ys) if first else model(heard)
        rate = is_fooled(z.argmax(1), ys, targeted).view(rooms, n).float().mean(0)
        return -ascend(z, ys, targeted).view(rooms, n).mean(0), rate >= min_rate

    with frozen(model):
        xa, won, met, peak = _descend(x, objective, tau_db=tau_db, steps=steps, lr=lr, shrink=shrink)
    return _result("audio_eot", model, x, y, xa, won, met, peak, tau_db)


def room_success_rate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, rooms: int = 32,
                      targeted: bool = True, rt60=(0.05, 0.3), drr_db=(3.0, 12.0),
                      noise_db: float | None = -40.0, sample_rate: int = SAMPLE_RATE,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Per example, the share of `rooms` random rooms (`room_impulse`, `simulate_room`) in
    which the model's prediction on the recorded clip meets the goal: is `y` when `targeted`
    (so, with true labels, the accuracy over the air), is not `y` otherwise. (N,) floats.

    Evaluate an attack over the air with a generator other than the attack's: unseen rooms.
    """
    check_model(model)
    x = check_audio(x)
    check_model_input(model, x)
    y = check_labels(y, x)
    check_positive(rooms, "rooms", integer=True)
    check_bool(targeted, "targeted")
    check_generator(generator)
    rir = room_impulse(rooms * len(x), sample_rate=sample_rate, rt60=rt60, drr_db=drr_db,
                       generator=generator, device=x.device)
    heard = simulate_room(x.repeat(rooms, 1, 1), rir, noise_db=noise_db, generator=generator)
    pred = predict(model, heard, batch_size=256).argmax(1)
    return is_fooled(pred, y.repeat(rooms), targeted).view(rooms, len(x)).float().mean(0)


def audio_universal(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, tau_db: float = -30.0,
                    steps: int = 200, lr: float = 0.05, targeted: bool = True,
                    loss: str = "ce") -> AudioAttackResult:
    """One perturbation delta (1, C, T) for all the clips x, by Adam on the mean loss over them
    (universal perturbations, Moosavi-Dezfooli et al. 2017, as Neekhara et al., Interspeech
    2019, carry them to audio), bounded for every clip:

        max|delta| <= 10^(tau/20) min_n max|x_n|,   so dB_{x_n}(delta) <= tau for each n,

    and added with clipping, clip(x_n + delta) in [-1, 1]. The bound stays fixed: the point of a
    universal perturbation is that it fits clips it has not seen (``result.delta``; apply it as
    ``(x_new + delta).clamp(-1, 1)``). Arguments as in `audio_attack`; `y` (N,) usually repeats
    one target class, but may differ per clip.
    """
    x, y = _checked(model, x, y, tau_db, steps, lr, targeted, 1.0, loss)
    ascend, peak = LOSSES[loss], flat_norm(x, "linf")
    bound = (10 ** (tau_db / 20) * peak.amin() - torch.finfo(x.dtype).eps).clamp_min(0)  # eps: see `_descend`
    u = torch.zeros_like(x[:1], requires_grad=True)
    opt = torch.optim.Adam([u], lr=lr)
    with frozen(model):
        for step in range(steps):
            xa = (x + bound * u).clamp(-1, 1)
            z = logits_of(model, xa, y) if step == 0 else model(xa)
            opt.zero_grad()
            (-ascend(z, y, targeted)).mean().backward()
            opt.step()
            with torch.no_grad():
                u.clamp_(-1, 1)
    delta = (bound * u).detach()
    xa = (x + delta).clamp(-1, 1)
    won = is_fooled(predict(model, xa).argmax(1), y, targeted)
    met = torch.full_like(peak, 10 ** (tau_db / 20)) * peak.amin()
    return _result("audio_universal", model, x, y, xa, won, met, peak, tau_db, delta)

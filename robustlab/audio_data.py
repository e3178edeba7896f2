"""Synthetic spoken "words": short clips the project generates itself, for the audio attacks of
lesson 02d (no network, no recordings).

Each word is a sequence of one to three syllables; a syllable is a voiced tone, a fundamental
f0 with two harmonics weighted like a vowel's formants ("a", "i" or "o"), under a raised-sine
envelope. Clips vary at random in pitch (+-1.5 semitones), timing (start and syllable lengths),
loudness and background noise. Waveforms are (N, 1, T) float32 in [-1, 1] at `SAMPLE_RATE`;
``IPython.display.Audio(x[i, 0].numpy(), rate=SAMPLE_RATE)`` plays one.
"""

from __future__ import annotations

import math

import torch

from ._checks import check_choice, check_positive, check_seed

__all__ = ["CLASSES", "SAMPLE_RATE", "SECONDS", "WORDS", "clips"]

SAMPLE_RATE = 8000
SECONDS = 0.5
# the weights of harmonics 1, 2, 3 of f0: a crude stand-in for a vowel's formants
VOWELS = {"a": (1.0, 0.8, 0.5), "i": (1.0, 0.15, 0.6), "o": (1.0, 0.45, 0.05)}
# each word: its syllables as (f0 in Hz, vowel); classes differ in pitch contour and timbre
WORDS = {
    "yes": ((300, "i"), (450, "i")),
    "no": ((450, "o"), (300, "o")),
    "up": ((250, "a"), (350, "a"), (500, "a")),
    "down": ((500, "a"), (350, "a"), (250, "a")),
    "left": ((350, "i"),),
    "right": ((350, "o"), (350, "i")),
    "go": ((250, "o"),),
    "stop": ((500, "i"), (500, "i")),
}
CLASSES = tuple(WORDS)
SPOKEN = 0.3  # seconds of voice in a word, split between its syllables and the gaps between them


def clips(split: str = "train", *, n_per_class: int | None = None, seed: int = 0,
          sample_rate: int = SAMPLE_RATE, seconds: float = SECONDS) -> tuple[torch.Tensor, torch.Tensor]:
    """`n_per_class` clips of each word of `CLASSES`: waveforms (N, 1, T) in [-1, 1] with
    T = round(seconds * sample_rate), and labels (N,) indexing `CLASSES`.

    Syllable s of a word sounds ``env(t) * sum_h w_h sin(2 pi h f0_s t + phi_h)`` for h = 1, 2, 3,
    with env a raised sine over the syllable. Per clip: pitch shifted by 2^(u/12), u ~ U(-1.5,
    1.5); start ~ U(0, 0.1 s); syllable lengths scaled by U(0.85, 1.15); peak amplitude ~
    U(0.3, 0.8); Gaussian background noise of standard deviation U(0.002, 0.02). The train and
    test splits draw from different streams of the same `seed`; the same arguments give the
    same clips. Defaults: 60 clips per class for "train", 25 for "test".
    """
    check_choice(split, ("train", "test"), "split")
    check_seed(seed)
    n = {"train": 60, "test": 25}[split] if n_per_class is None else n_per_class
    check_positive(n, "n_per_class", integer=True)
    check_positive(sample_rate, "sample_rate", integer=True)
    check_positive(seconds, "seconds")
    length = round(seconds * sample_rate)
    if seconds < SPOKEN + 0.15 or sample_rate < 2 * 3 * 600:  # room for the jitter; 3 f0 < Nyquist
        raise ValueError(f"seconds must be >= {SPOKEN + 0.15} and sample_rate >= 3600 (the third "
                         f"harmonic of the highest pitch), got {seconds} and {sample_rate}")
    gen = torch.Generator().manual_seed(2 * seed + (split == "test"))
    y = torch.arange(len(CLASSES)).repeat_interleave(n)
    x = torch.cat([_word(WORDS[name], n, length, sample_rate, gen) for name in CLASSES])[:, None]
    noise = torch.rand(len(x), 1, 1, generator=gen) * 0.018 + 0.002
    x = x + noise * torch.randn(x.shape, generator=gen)
    return x.clamp(-1, 1), y


def _word(syllables, n: int, length: int, rate: int, gen: torch.Generator) -> torch.Tensor:
    """`n` clean utterances (n, length) of one word, peak-normalised to a random loudness."""
    t = torch.arange(length) / rate
    pitch = 2 ** ((torch.rand(n, 1, generator=gen) * 3 - 1.5) / 12)
    gap = 0.03 if len(syllables) > 1 else 0.0
    each = (SPOKEN - gap * (len(syllables) - 1)) / len(syllables)
    start = torch.rand(n, 1, generator=gen) * 0.1
    out = torch.zeros(n, length)
    for f0, vowel in syllables:
        dur = each * (torch.rand(n, 1, generator=gen) * 0.3 + 0.85)
        phase = (t - start) / dur  # 0 -> 1 over the syllable
        env = torch.where((phase >= 0) & (phase <= 1), torch.sin(math.pi * phase) ** 2, 0.0)
        for h, w in enumerate(VOWELS[vowel], 1):
            phi = torch.rand(n, 1, generator=gen) * 2 * math.pi
            out += env * w * torch.sin(2 * math.pi * h * f0 * pitch * t + phi)
        start = start + dur + gap
    loud = torch.rand(n, 1, generator=gen) * 0.5 + 0.3
    return out * loud / out.abs().amax(1, keepdim=True)

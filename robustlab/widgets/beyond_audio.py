"""Widget of lesson 02d for audio: play a clean clip, its adversarial version and the
perturbation alone at their real levels (the perturbation times a gain it states), with the
model's words, dB_x(delta), the waveforms and the spectrograms.

The widget draws what the pure function `audio_view` computes, so a test can check the numbers
without a display.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

import ipywidgets as W
import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import HTML, Audio, display
from matplotlib import mlab
from torch import nn

from .. import attacks
from .._checks import check_in_range, check_labels, check_positive
from ..attacks.audio import check_audio
from ..audio_data import CLASSES as WORDS
from ..audio_data import SAMPLE_RATE
from .beyond_clouds import answers_of, class_name
from .figures import one_at_a_time

__all__ = ["GAINS", "audio_comparison", "audio_view"]

GAINS = (1, 10, 100, 1000)  # how much the perturbation alone may be amplified to be heard
SPECTRUM_RANGE = 90  # dB of power the spectrograms show below the clean clip's loudest bin


def _gain(gain) -> int:
    if gain not in GAINS or isinstance(gain, bool):
        raise ValueError(f"gain must be one of {GAINS}, got {gain!r}")
    return int(gain)


def _power_db(wave: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Power spectrogram in dB, 10 log10 |STFT|^2 averaged over channels (Hann windows of 256
    samples, or the clip's length if shorter, overlapping by half), with its frequencies (Hz)
    and frame times (s)."""
    n_fft = min(256, 1 << (wave.shape[-1].bit_length() - 1))
    runs = [mlab.specgram(channel, NFFT=n_fft, Fs=rate, noverlap=n_fft // 2) for channel in wave]
    power = np.mean([spec for spec, _, _ in runs], axis=0)
    return 10 * np.log10(power + 1e-30), runs[0][1], runs[0][2]


def audio_view(model: nn.Module, clip: torch.Tensor, adversarial: torch.Tensor, *, gain: int = 10,
               label: int | None = None, target: int | None = None,
               class_names: Sequence[str] = WORDS, sample_rate: int = SAMPLE_RATE) -> dict:
    """What the audio comparison shows for one clip: the clean and adversarial waveforms and
    the perturbation delta, at their real levels (numpy (C, T)), the perturbation as played,
    ``gain * delta`` clipped to [-1, 1] (``clipped`` counts the samples clipped), the model's
    word and probability on both clips, and Carlini and Wagner's (2018, sec. 3) distortion

        dB_x(delta) = 20 log10 max|delta| - 20 log10 max|x|,

    with ``played_db`` = dB_x(delta) + 20 log10(gain), the level the perturbation is played at
    relative to the clean clip's peak; and the power spectrograms in dB of the clean clip and of
    delta (``clean_spectrogram``, ``perturbation_spectrogram``, over ``freqs`` and ``times``),
    drawn on one colour scale so that the perturbation looks as quiet as it is.

    Args:
        clip, adversarial: one clip and its adversarial version (C, T), in [-1, 1].
        gain: the perturbation's amplification, one of `GAINS`.
        label, target: the clip's true class and the attack's target, if known.
        sample_rate: samples per second (the spectrograms' frequencies).
    """
    gain = _gain(gain)
    check_positive(sample_rate, "sample_rate", integer=True)
    x, xa = clip.detach()[None], adversarial.detach()[None]
    delta = xa - x
    level = float(attacks.relative_db(delta, x)[0])
    heard = answers_of(model, (clip, adversarial), class_names)
    played = gain * delta[0].cpu().double()
    clean_db, freqs, times = _power_db(x[0].cpu().double().numpy(), sample_rate)
    return {"clean_spectrogram": clean_db, "freqs": freqs, "times": times,
            "perturbation_spectrogram": _power_db(delta[0].cpu().double().numpy(), sample_rate)[0],
            "clean": x[0].cpu().numpy(), "adversarial": xa[0].cpu().numpy(),
            "perturbation": delta[0].cpu().numpy(), "played": played.clamp(-1, 1).numpy(),
            "gain": gain, "clipped": int((played.abs() > 1).sum()), "db": level,
            "played_db": level + 20 * math.log10(gain), "clean_class": heard[0][0],
            "clean_word": heard[0][1], "clean_confidence": heard[0][2],
            "adversarial_class": heard[1][0], "adversarial_word": heard[1][1],
            "adversarial_confidence": heard[1][2],
            "label": None if label is None else class_name(class_names, label),
            "target": None if target is None else class_name(class_names, target),
            "reached": None if target is None else heard[1][0] == target}


def _draw_audio(view: dict, rate: int):
    """The clean waveform with the perturbation on the same scale, and the spectrograms of the
    clean clip and of the perturbation on one colour scale (SPECTRUM_RANGE dB below the clip's
    loudest bin)."""
    t_ms = np.arange(view["clean"].shape[-1]) / rate * 1000
    fig, axes = plt.subplot_mosaic([["wave", "wave"], ["clean", "delta"]], figsize=(8, 4.8),
                                   height_ratios=[1, 1.3], layout="constrained")
    axes["wave"].plot(t_ms, view["clean"].T, lw=0.6, color="C0", label="clean")
    axes["wave"].plot(t_ms, view["perturbation"].T, lw=0.6, color="C3", label="perturbation")
    axes["wave"].legend(fontsize=7, loc="upper right")
    axes["wave"].set(xlabel="time (ms)", ylabel="amplitude")
    axes["wave"].set_title(f"waveforms, one scale: dB_x(δ) = {view['db']:.1f} dB", fontsize=8)
    top = float(view["clean_spectrogram"].max())
    extent = (view["times"][0] * 1000, view["times"][-1] * 1000, view["freqs"][0], view["freqs"][-1])
    for key, name in (("clean", "clean clip"), ("delta", "perturbation")):
        power = view["clean_spectrogram" if key == "clean" else "perturbation_spectrogram"]
        image = axes[key].imshow(power, origin="lower", aspect="auto", extent=extent, cmap="magma",
                                 vmin=top - SPECTRUM_RANGE, vmax=top,
                                 interpolation="nearest")  # smoothing doubles the stored PNG
        axes[key].set_title(f"{name}: power (dB)", fontsize=8)
        axes[key].set(xlabel="time (ms)", ylabel="Hz" if key == "clean" else None)
    fig.colorbar(image, ax=[axes["clean"], axes["delta"]], fraction=0.05, pad=0.02)
    return fig


def _summary(view: dict) -> str:
    """The model's words and the levels, as HTML (<p> only: the static site cuts at </div>)."""
    said = [f"<b>clean</b>: heard as '{html.escape(view['clean_word'])}' ({view['clean_confidence']:.0%})"
            + (f", the clip is '{html.escape(view['label'])}'" if view["label"] else ""),
            f"<b>adversarial</b>: heard as '{html.escape(view['adversarial_word'])}' "
            f"({view['adversarial_confidence']:.0%})"
            + (f", target '{html.escape(view['target'])}' "
               f"{'reached' if view['reached'] else 'not reached'}" if view["target"] else ""),
            f"dB<sub>x</sub>(δ) = {view['db']:.1f} dB: the perturbation's loudest sample against the clip's"]
    return "<p>" + "<br>".join(said) + "</p>"


def audio_comparison(model: nn.Module, x: torch.Tensor, adversarial, *, y: torch.Tensor | None = None,
                     target: torch.Tensor | None = None, class_names: Sequence[str] = WORDS,
                     sample_rate: int = SAMPLE_RATE, index: int = 0, gain: int = 10) -> W.VBox:
    """Pick a clip and hear it clean, adversarial, and the perturbation alone, with the model's
    word and probability on both, dB_x(delta), the waveforms and the spectrograms (`audio_view`).

    The players never play by themselves and never rescale: clean and adversarial play at
    their real levels, and the perturbation at its real level times ``gain`` (the dropdown,
    ``x1`` is its true loudness), with the gain and the level it is played at said beside it.

    Args:
        model: the classifier; x: the clean clips (N, C, T) in [-1, 1].
        adversarial: their adversarial versions (N, C, T), or an `AudioAttackResult` on `x`.
        y, target: the true classes and the attack's targets (N,), if known.
    Controls: ``.index`` (the clip) and ``.gain``. ``.state`` holds `audio_view`'s entries for
    the clip shown, with ``index``, ``players`` (the three `IPython.display.Audio`) and ``html``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_audio(x, "x")
    if isinstance(adversarial, attacks.AudioAttackResult):
        adversarial = adversarial.x_adv
    check_audio(adversarial, "adversarial")
    if adversarial.shape != x.shape or adversarial.device != x.device:
        raise ValueError(f"adversarial must have x's shape {tuple(x.shape)} on {x.device}, got "
                         f"{tuple(adversarial.shape)} on {adversarial.device}")
    y = None if y is None else check_labels(y, x, name="y")
    target = None if target is None else check_labels(target, x, name="target")
    check_positive(sample_rate, "sample_rate", integer=True)
    check_in_range(index, "index", 0, len(x) - 1, integer=True)
    _gain(gain)

    index_w = W.IntSlider(value=index, min=0, max=len(x) - 1, description="clip", continuous_update=False)
    gain_w = W.Dropdown(options=[(f"×{g} (+{20 * math.log10(g):.0f} dB)", g) for g in GAINS], value=gain,
                        description="δ played")
    out = W.Output()
    box = W.VBox([W.HBox([index_w, gain_w]), out])
    box.index, box.gain, box.out, box.state = index_w, gain_w, out, {}

    @one_at_a_time
    def update(_=None):
        i = index_w.value
        view = audio_view(model, x[i], adversarial[i], gain=gain_w.value, class_names=class_names,
                          sample_rate=sample_rate,
                          label=None if y is None else int(y[i]),
                          target=None if target is None else int(target[i]))
        players = [Audio(view[key], rate=sample_rate, normalize=False, autoplay=False)
                   for key in ("clean", "adversarial", "played")]
        text = _summary(view)
        captions = ["clean, real level", "adversarial, real level",
                    f"perturbation alone, amplified ×{view['gain']}: played at {view['played_db']:.1f} dB "
                    f"against the clean clip's peak" + (f" ({view['clipped']} samples clipped at ±1)"
                                                        if view["clipped"] else "")]
        with out:
            out.clear_output(wait=True)
            display(HTML(text))
            fig = _draw_audio(view, sample_rate)
            plt.show()
            plt.close(fig)
            for caption, player in zip(captions, players):
                display(HTML(f"<p>{html.escape(caption)}</p>"))
                display(player)
        box.state = {**view, "index": i, "players": players, "captions": captions, "html": text}

    for w in (index_w, gain_w):
        w.observe(update, "value")
    update()
    return box

"""A small classifier of the synthetic words of `robustlab.audio_data`, and its seeded training.

`AudioCNN` takes raw waveforms (N, 1, T) and computes its own log-power spectrogram with
``torch.stft`` (differentiable, so attacks perturb the waveform itself), then runs a 1-D CNN
over time with the frequency bins as channels. `train_audio_model` retrains it from its
seed in seconds, with the same weights each time; the zoo stores it, trained with seed 0, beside its
recipe (`robustlab.zoo_beyond`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_positive, check_seed
from .audio_data import CLASSES, clips
from .train import fit

__all__ = ["AudioCNN", "train_audio_model"]


class AudioCNN(nn.Module):
    """Waveform -> log |STFT|^2 (Hann window `n_fft`, hop n_fft / 2) minus its mean over the
    clip (so loudness does not matter) -> a 1-D convolution of width 3 over frames, ReLU, max
    pooling by 2 (so the second layer sees a word's pitch contour, about 100 ms) -> another,
    ReLU -> max over time -> linear. The window is a buffer, so it follows the model to its device."""

    def __init__(self, num_classes: int = len(CLASSES), n_fft: int = 256, channels: int = 32):
        super().__init__()
        check_positive(num_classes, "num_classes", integer=True)
        check_positive(n_fft, "n_fft", integer=True)
        check_positive(channels, "channels", integer=True)
        self.n_fft = n_fft
        self.register_buffer("window", torch.hann_window(n_fft))
        bins = n_fft // 2 + 1
        self.conv1 = nn.Conv1d(bins, channels, 3, padding=1)
        self.conv2 = nn.Conv1d(channels, channels, 3, padding=1)
        self.head = nn.Linear(channels, num_classes)

    def spectrogram(self, x: torch.Tensor) -> torch.Tensor:
        """Log-power spectrogram (N, bins, frames) of waveforms (N, 1, T), mean removed."""
        if x.dim() != 3 or x.shape[1] != 1:
            raise ValueError(f"x must have shape (N, 1, T) (mono waveforms), got {tuple(x.shape)}")
        s = torch.stft(x[:, 0], self.n_fft, hop_length=self.n_fft // 2, window=self.window,
                       return_complex=True)
        # the floor keeps log finite on silence; 1e-8 is -80 dB below a full-scale tone's power
        logp = torch.log(s.real ** 2 + s.imag ** 2 + 1e-8)
        return logp - logp.mean((1, 2), keepdim=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.max_pool1d(F.relu(self.conv1(self.spectrogram(x))), 2)
        return self.head(F.relu(self.conv2(h)).amax(2))


def train_audio_model(*, seed: int = 0, epochs: int | None = None, lr: float = 3e-3,
                      batch_size: int = 32, device: str | torch.device | None = None) -> AudioCNN:
    """Train an `AudioCNN` on ``audio_data.clips("train")``; return it in eval mode on `device`
    (the CPU by default).

    `seed` fixes the initial weights (drawn under a forked global RNG, so the caller's stream is
    untouched) and the batch order: the same seed gives the same weights. Adam (`lr` 3e-3 and
    `batch_size` 32 by default), `epochs` 12 by default: a few seconds on one CPU thread. The
    zoo stores it with its recipe (`robustlab.zoo_beyond`).
    """
    check_seed(seed)
    epochs = 12 if epochs is None else check_positive(epochs, "epochs", integer=True)
    check_positive(lr, "lr")
    check_positive(batch_size, "batch_size", integer=True)
    x, y = clips("train")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AudioCNN()
    device = torch.device("cpu") if device is None else torch.device(device)
    model.to(device)
    fit(model, (x.to(device), y.to(device)), epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
        progress=False, device=device)
    return model.eval()

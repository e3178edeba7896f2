"""Input transformations as defences: quantisation, median smoothing, JPEG compression,
total-variation minimisation, random resizing and padding, and the wrapper that deploys one in
front of a model.

Each is what Athalye, Carlini and Wagner, "Obfuscated gradients give a false sense of security"
(ICML 2018) break with BPDA or EOT (``robustlab.attacks.BPDA`` / ``EOT``): ``bit_depth`` and
``jpeg`` shatter the gradient (zero almost everywhere), ``median_filter`` and ``tv_denoise``
are differentiable but far from the identity the attacker's BPDA assumes, ``RandomResizePad``
randomises it. Every transform maps ``(N, C, H, W)`` images in [0, 1] to images of the same
shape, dtype and device in [0, 1]; give it extra arguments with ``functools.partial``, e.g.
``Defended(model, partial(jpeg, quality=75))``. Feature squeezing's detector is in
``robustlab.defences.squeeze``.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_choice, check_in_range, check_nonnegative, check_positive
from .._random import draw_device

Transform = Callable[[torch.Tensor], torch.Tensor]


def bit_depth(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Round each pixel of `x` in [0, 1] to one of 2^bits levels (Xu et al., NDSS 2018).

    round() is piecewise constant, so autograd gives exactly zero gradient: a "shattered"
    gradient in Athalye et al.'s terms.
    """
    check_positive(bits, "bits", integer=True)
    levels = 2 ** bits - 1
    return torch.round(x * levels) / levels


def _check_batch(x, name: str = "x") -> torch.Tensor:
    """A non-empty floating (N, C, H, W) tensor; the [0, 1] range is not read back here (that
    would stall a GPU at every attack step), except where the transform runs on the host."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got dtype {x.dtype}")
    if x.dim() != 4 or x.shape[0] == 0:
        raise ValueError(f"{name} must have shape (N, C, H, W) with N > 0, got {tuple(x.shape)}")
    return x


def median_filter(x: torch.Tensor, k: int = 3) -> torch.Tensor:
    """Replace each pixel by the median of its k x k neighbourhood, channel by channel.

    Xu, Evans and Qi, "Feature squeezing" (NDSS 2018), section 3.2 (local smoothing; 2 x 2 on
    MNIST, 2 x 2 and 3 x 3 on CIFAR-10 and ImageNet). The border is padded by reflection, so
    a constant image is left as it is and a lone salt pixel in a k >= 3 window is removed. For
    an even k the window reaches one pixel further right and down than up and left, and the
    median of its k^2 values is the lower of the two middle ones (``torch.median``).
    Differentiable almost everywhere: the gradient flows to the pixel that is the median.

    Arguments:
        x: images (N, C, H, W).
        k: the window side, 1 <= k // 2 < min(H, W) (1 is the identity).
    """
    _check_batch(x)
    check_positive(k, "k", integer=True)
    n, c, h, w = x.shape
    if k // 2 >= min(h, w):
        raise ValueError(f"k={k} is too large for {h} x {w} images: reflect padding needs "
                         f"k // 2 < min(H, W)")
    before, after = (k - 1) // 2, k // 2
    padded = F.pad(x.reshape(n * c, 1, h, w), (before, after, before, after), mode="reflect")
    windows = F.unfold(padded, k)  # (N*C, k*k, H*W): one column per output pixel
    return windows.median(dim=1).values.view(n, c, h, w)


JPEG_SUBSAMPLING = ("4:4:4", "4:2:2", "4:2:0")


class _JpegRoundTrip(torch.autograd.Function):
    """JPEG encode and decode on the host; backward returns zero, the derivative of a map whose
    output takes only 256 values per pixel (piecewise constant, like ``round``)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, quality: int, subsampling: str) -> torch.Tensor:
        from PIL import Image

        pixels = (x.detach().cpu().double() * 255).round().to(torch.uint8)
        pixels = pixels.permute(0, 2, 3, 1).numpy()  # (N, H, W, C), as Pillow reads images
        mode = "L" if x.shape[1] == 1 else "RGB"
        out = []
        for image in pixels:
            buffer = io.BytesIO()
            Image.fromarray(image[..., 0] if mode == "L" else image, mode).save(
                buffer, format="JPEG", quality=quality, subsampling=subsampling)
            buffer.seek(0)
            decoded = np.asarray(Image.open(buffer).convert(mode))
            out.append(decoded.reshape(image.shape))
        y = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2)
        return (y.to(torch.float64) / 255).to(device=x.device, dtype=x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return torch.zeros_like(grad), None, None


def jpeg(x: torch.Tensor, quality: int = 75, *, subsampling: str = "4:2:0") -> torch.Tensor:
    """JPEG compression and decompression of each image, with Pillow.

    Dziugaite, Ghahramani and Roy (2016) and Guo, Rana, Cisse and van der Maaten, "Countering
    adversarial images using input transformations" (ICLR 2018): the lossy quantisation of
    the 8 x 8 DCT coefficients discards much of a small perturbation. Each pixel is rounded to
    8 bits, encoded at `quality` and decoded; the result is in [0, 1] with x's shape, dtype and
    device. Its autograd derivative is zero, which is what it is almost everywhere: a
    "shattered" gradient in Athalye et al.'s terms, broken by BPDA.

    Cost: the round trip runs on the host, one image at a time, so a GPU batch is read back
    (a sync), copied to the host and back, and Pillow encodes each image in turn: every
    forward pays it, so PGD, BPDA or EOT against ``Defended(model, jpeg)`` pays it at every
    step (and EOT once per sample). `jpeg_approx` is the same codec as tensor operations on
    x's device, differentiable, for attacks that need many steps on a GPU.

    Arguments:
        x: images (N, C, H, W) in [0, 1] with C = 1 (grayscale) or 3 (RGB).
        quality: the JPEG quality, an int in [1, 100] (100: finest quantisation tables).
        subsampling: chroma subsampling of RGB images, "4:4:4" (none), "4:2:2" or "4:2:0"
            (libjpeg's default); ignored for grayscale.
    """
    _check_batch(x)
    if isinstance(quality, bool) or not isinstance(quality, int):
        raise TypeError(f"quality must be an int, got {type(quality).__name__}")
    check_in_range(quality, "quality", 1, 100)
    check_choice(subsampling, JPEG_SUBSAMPLING, "subsampling")
    if x.shape[1] not in (1, 3):
        raise ValueError(f"x must have 1 (grayscale) or 3 (RGB) channels for JPEG, got "
                         f"{x.shape[1]} (shape {tuple(x.shape)})")
    lo, hi = (t.item() for t in torch.aminmax(x.detach()))  # the copy to the host syncs anyway
    if not (0 <= lo and hi <= 1):  # NaN fails too
        raise ValueError(f"x must lie in [0, 1] for JPEG, got range [{lo:.3g}, {hi:.3g}]")
    return _JpegRoundTrip.apply(x, quality, subsampling)


def _dct_matrix(dtype, device) -> torch.Tensor:
    """The orthonormal 8-point DCT-II, rows the frequencies: D[u, i] = c_u cos((2i + 1) u pi / 16)."""
    i = torch.arange(8, dtype=torch.float64)
    d = torch.cos((2 * i[None, :] + 1) * i[:, None] * torch.pi / 16) * 0.5
    d[0] = 8 ** -0.5
    return d.to(device=device, dtype=dtype)


# the example tables of the JPEG standard (ITU T.81, Annex K.1), luminance and chrominance, as
# libjpeg scales them with the quality
_LUMA = [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69,
         56, 14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81,
         104, 113, 92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99]
_CHROMA = [17, 18, 24, 47] + [99] * 4 + [18, 21, 26, 66] + [99] * 4 + [24, 26, 56] + [99] * 5 \
    + [47, 66] + [99] * 38


def jpeg_table(quality: int, chroma: bool = False) -> torch.Tensor:
    """The 8 x 8 quantisation table libjpeg uses at `quality` (float64, entries in [1, 255]).

    IJG libjpeg's ``jpeg_quality_scaling``: the standard's table times 5000 / quality (quality
    < 50) or 200 - 2 quality (percent), rounded, clamped to [1, 255].

    Arguments:
        quality: an int in [1, 100]; chroma: the chrominance table instead of the luminance one.
    """
    check_in_range(quality, "quality", 1, 100, integer=True)
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    base = torch.tensor(_CHROMA if chroma else _LUMA, dtype=torch.float64).view(8, 8)
    return ((base * scale + 50) // 100).clamp(1, 255)


def smooth_round(v: torch.Tensor) -> torch.Tensor:
    """round(v) + (v - round(v))^3: within 1/8 of round(v), derivative 3 (v - round(v))^2.

    Shin and Song, "JPEG-resistant adversarial images" (NIPS 2017 workshop), eq. 2: the
    rounding of JPEG's quantisation, made differentiable.
    """
    r = torch.round(v).detach()
    return r + (v - r) ** 3


_RGB_TO_YCBCR = [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]]


def jpeg_approx(x: torch.Tensor, quality: int = 75) -> torch.Tensor:
    """A differentiable JPEG on x's device: blockwise DCT, smooth quantisation, inverse DCT.

    Shin and Song, "JPEG-resistant adversarial images" (NIPS 2017 workshop): JPEG's steps as
    tensor operations, with the rounding of the quantised coefficients replaced by
    `smooth_round`, so the gradient is the approximation's (not zero as `jpeg`'s). Pixels go to
    [-128, 127] (RGB first to YCbCr, JFIF's matrix), each 8 x 8 block (edges replicated up to a
    multiple of 8, as libjpeg does) to the DCT, each coefficient is divided by `jpeg_table`'s
    entry (luminance for Y and grey, chrominance for Cb and Cr), smoothly rounded and
    multiplied back, then the inverse DCT and colour transform; clamped to [0, 1]. No chroma
    subsampling (Pillow's ``subsampling="4:4:4"``). Forward values differ from `jpeg`'s by the
    smooth rounding (up to 1/8 of a quantisation step per coefficient) and libjpeg's integer
    DCT: on the test digits at quality 75, 0.005 in mean absolute pixel, where JPEG itself
    moves them by 0.022 (measured; 0.014 and 0.10 at quality 10).

    Arguments:
        x: images (N, C, H, W) in [0, 1], C = 1 (grayscale) or 3 (RGB); not read back.
        quality: the JPEG quality, an int in [1, 100].
    """
    _check_batch(x)
    if x.shape[1] not in (1, 3):
        raise ValueError(f"x must have 1 (grayscale) or 3 (RGB) channels for JPEG, got "
                         f"{x.shape[1]} (shape {tuple(x.shape)})")
    tables = torch.stack([jpeg_table(quality)] + [jpeg_table(quality, chroma=True)] * 2)
    tables = tables[:x.shape[1]].to(device=x.device, dtype=x.dtype)
    colour = torch.tensor(_RGB_TO_YCBCR, device=x.device, dtype=x.dtype)
    h, w = x.shape[-2:]
    v = F.pad(x * 255, (0, -w % 8, 0, -h % 8), mode="replicate")
    if x.shape[1] == 3:
        v = torch.einsum("dc,nchw->ndhw", colour, v) + v.new_tensor([0.0, 128, 128])[:, None, None]
    blocks = v.unfold(2, 8, 8).unfold(3, 8, 8) - 128  # (N, C, H/8, W/8, 8, 8)
    d = _dct_matrix(x.dtype, x.device)
    q = tables[None, :, None, None]
    coeffs = smooth_round(d @ blocks @ d.T / q) * q
    v = (d.T @ coeffs @ d + 128).permute(0, 1, 2, 4, 3, 5).reshape(v.shape)
    if x.shape[1] == 3:
        v = v - v.new_tensor([0.0, 128, 128])[:, None, None]
        v = torch.einsum("cd,ndhw->nchw", torch.linalg.inv(colour), v)
    return (v[..., :h, :w] / 255).clamp(0, 1)


def _gradient(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward differences along W and H, zero on the last column / row (Neumann border)."""
    return (F.pad(u[..., :, 1:] - u[..., :, :-1], (0, 1)),
            F.pad(u[..., 1:, :] - u[..., :-1, :], (0, 0, 0, 1)))


def _divergence(px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """Minus the adjoint of `_gradient`: <grad u, p> = -<u, div p> (Chambolle 2004, eq. 2.1)."""
    qx, qy = px[..., :, :-1], py[..., :-1, :]
    return (F.pad(qx, (0, 1)) - F.pad(qx, (1, 0))) + (F.pad(qy, (0, 0, 0, 1)) - F.pad(qy, (0, 0, 1, 0)))


def _magnitude(gx: torch.Tensor, gy: torch.Tensor) -> torch.Tensor:
    # the floor keeps the derivative of the square root finite at a zero gradient
    return (gx * gx + gy * gy).clamp_min(1e-24).sqrt()


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """The isotropic total variation of each image, sum over channels and pixels of
    ``sqrt(dx^2 + dy^2)`` with forward differences (Rudin, Osher and Fatemi 1992); shape (N,)."""
    _check_batch(x)
    gx, gy = _gradient(x)
    return (gx * gx + gy * gy).sqrt().flatten(1).sum(1)


def tv_denoise(x: torch.Tensor, weight: float = 0.1, *, steps: int = 50) -> torch.Tensor:
    """Total-variation minimisation: the Rudin-Osher-Fatemi denoised image, channel by channel.

    Rudin, Osher and Fatemi (1992); as a defence, Guo et al. (ICLR 2018). Approximately solves

        u* = argmin_u  ||u - x||^2 / 2 + weight * TV(u)

    with Chambolle's projection algorithm ("An algorithm for total variation minimization and
    applications", 2004, eq. 3.5 and Theorem 3.1): with tau = 1/8,
        p <- (p + tau grad(div p - x / weight)) / (1 + tau |grad(div p - x / weight)|),
        u = x - weight div p,
    from p = 0, for `steps` iterations; then u is clipped to [0, 1] (which never raises the
    total variation). A plain torch loop, so autograd differentiates through it.

    Arguments:
        x: images (N, C, H, W).
        weight: the regularisation weight lambda >= 0; 0 returns x unchanged.
        steps: the number of Chambolle iterations, a positive int.
    """
    _check_batch(x)
    weight = check_nonnegative(weight, "weight")
    check_positive(steps, "steps", integer=True)
    if weight == 0:
        return x.clone()
    tau = 1 / 8
    px, py = torch.zeros_like(x), torch.zeros_like(x)
    for _ in range(steps):
        gx, gy = _gradient(_divergence(px, py) - x / weight)
        scale = 1 + tau * _magnitude(gx, gy)
        px, py = (px + tau * gx) / scale, (py + tau * gy) / scale
    return (x - weight * _divergence(px, py)).clamp(0, 1)


class RandomResizePad(nn.Module):
    """Shrink each image by a random factor and pad it back at a random place with zeros.

    Xie, Wang, Zhang, Ren and Yuille, "Mitigating adversarial effects through randomization"
    (ICLR 2018), at the size of the input: one bilinear affine warp per image, scale drawn
    uniformly in [min_scale, 1], offset uniformly so the shrunken image stays in the frame.
    Random in train and eval mode alike, as a deployed defence is; the draws come from
    `generator` (on its device), so a seeded generator replays them.
    """

    def __init__(self, min_scale: float = 0.75, generator: torch.Generator | None = None):
        super().__init__()
        check_in_range(min_scale, "min_scale", 0, 1, low_open=True)
        self.min_scale, self.generator = min_scale, generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = len(x)
        g, dev = self.generator, draw_device(self.generator, x.device)
        s = self.min_scale + (1 - self.min_scale) * torch.rand(n, generator=g, device=dev)
        t = (1 - s)[:, None] * (2 * torch.rand(n, 2, generator=g, device=dev) - 1)
        # output point o reads input point (o - t) / s: the image lands on [t - s, t + s]
        theta = torch.zeros(n, 2, 3, device=dev)
        theta[:, 0, 0] = theta[:, 1, 1] = 1 / s
        theta[:, :, 2] = -t / s[:, None]
        grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class Defended(nn.Module):
    """A defence as deployed: ``model(transform(x))``, gradients as autograd finds them."""

    def __init__(self, model: nn.Module, transform: Transform):
        super().__init__()
        self.model, self.transform = model, transform

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.transform(x))

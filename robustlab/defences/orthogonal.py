"""Orthogonal convolutions and the certified radius of gradient-norm-preserving (GNP) networks.

`OrthogonalConv2d` is the Cayley convolution of Trockman and Kolter, "Orthogonalizing
convolutional layers with the Cayley transform" (ICLR 2021): a circular convolution is
diagonal in the 2-D Fourier basis, one c_out x c_in matrix per frequency, so it is orthogonal
exactly when every one of those matrices is; the Cayley transform makes each of them
orthogonal (unitary) by construction, not by iteration. With c_out = c_in the layer is an
isometry, ||conv(x)||_2 = ||x||_2, and its Jacobian is orthogonal, so gradient norms are
preserved too (Li et al. 2019's "gradient norm preserving" property, which BCOP builds
differently).

A GNP network (orthogonal convolutions, GroupSort, `BjorckLinear`, Anil et al. 2019) is
1-Lipschitz in L2: `gnp_radius` turns its logit margin into a certified L2 radius.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._checks import check_bool, check_images, check_positive
from .._model import check_model, check_model_input, eval_mode, logits_of

__all__ = ["OrthogonalConv2d", "cayley", "gnp_radius"]


def cayley(w: torch.Tensor) -> torch.Tensor:
    """The Cayley transform of a batch of (complex) c_out x c_in matrices, Trockman and Kolter's
    eq. 7 and its rectangular form: for c_out >= c_in, with U the top c_in rows of W and V the
    rest,

        A = U - U^H + V^H V,    Q = [ (I + A)^-1 (I - A) ;  -2 V (I + A)^-1 ],

    which has orthonormal columns (Q^H Q = I; A + A^H = 2 V^H V is what makes the bottom block
    fit); for c_out < c_in the transform of W^T, transposed, with orthonormal rows. For a square
    W this is (I + A)^-1 (I - A), A = W - W^H skew-Hermitian: orthogonal for any W, W = 0 gives I.
    """
    cout, cin = w.shape[-2:]
    if cin > cout:
        return cayley(w.mT).mT
    u, v = w[..., :cin, :], w[..., cin:, :]
    eye = torch.eye(cin, dtype=w.dtype, device=w.device)
    a = u - u.mH + v.mH @ v
    inv = torch.linalg.inv(eye + a)  # I + A is invertible: A's Hermitian part V^H V is PSD
    return torch.cat([inv @ (eye - a), -2 * v @ inv], dim=-2)


class OrthogonalConv2d(nn.Module):
    """A stride-1 2-D convolution whose linear map is exactly orthogonal (Trockman and Kolter
    2021): a `kernel_size` x `kernel_size` kernel, zero-padded to the image size and centred,
    applied as a circular ("same" size, wrap-around) convolution through the FFT,

        y_hat(u, v) = Q(u, v) x_hat(u, v),   Q(u, v) = cayley(W_hat(u, v)),

    with W_hat the 2-D DFT of ``alpha * weight / ||weight||_F`` (their learnable scale alpha,
    initialised to the norm of the initial weight). The output has the input's height and width.
    c_out = c_in: an isometry (||y - b||_2 = ||x||_2 for every x, orthogonal Jacobian);
    c_out > c_in: norm preserving (orthonormal columns); c_out < c_in: 1-Lipschitz (orthonormal
    rows). For a downsampling layer put ``nn.PixelUnshuffle(2)`` before it (a permutation, so
    orthogonal too), as Trockman and Kolter do. The effective kernel covers the whole image, so
    the layer is orthogonal but not local: that is the price of exactness.

    Arguments: in_channels, out_channels, kernel_size (an int, at most the image's height and
    width); bias (keyword).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *,
                 bias: bool = True):
        super().__init__()
        self.in_channels = check_positive(in_channels, "in_channels", integer=True)
        self.out_channels = check_positive(out_channels, "out_channels", integer=True)
        self.kernel_size = check_positive(kernel_size, "kernel_size", integer=True)
        check_bool(bias, "bias")
        weight = torch.empty(out_channels, in_channels, kernel_size, kernel_size)
        nn.init.kaiming_uniform_(weight, a=math.sqrt(5))  # nn.Conv2d's initialisation
        self.weight = nn.Parameter(weight)
        self.alpha = nn.Parameter(weight.norm().detach().clone())
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def frequency_matrices(self, height: int, width: int) -> torch.Tensor:
        """The orthogonal Q(u, v) for an image of `height` x `width`: complex, shape
        (height, width // 2 + 1, c_out, c_in) (the real FFT's half of the frequencies; the
        others are their conjugates)."""
        k = self.kernel_size
        if k > height or k > width:
            raise ValueError(f"kernel_size={k} is larger than the image ({height} x {width})")
        w = self.alpha * self.weight / self.weight.norm()
        padded = w.new_zeros(self.out_channels, self.in_channels, height, width)
        padded[..., :k, :k] = w
        padded = padded.roll((-(k // 2), -(k // 2)), dims=(2, 3))  # centre: output aligned
        return cayley(torch.fft.rfft2(padded).permute(2, 3, 0, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must be (N, {self.in_channels}, H, W), got shape "
                             f"{tuple(x.shape)}")
        h, w = x.shape[-2:]
        q = self.frequency_matrices(h, w)
        x_hat = torch.fft.rfft2(x).permute(2, 3, 1, 0)  # (H, W/2+1, c_in, N)
        y = torch.fft.irfft2((q @ x_hat).permute(3, 2, 0, 1), s=(h, w))
        return y if self.bias is None else y + self.bias[:, None, None]

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"bias={self.bias is not None}")


@torch.no_grad()
def gnp_radius(model: nn.Module, x: torch.Tensor, *, lipschitz: float = 1.0) -> torch.Tensor:
    """The certified L2 radius of an L-Lipschitz network at each example of x (Tsuzuku, Sato and
    Sugiyama 2018, Prop. 1; the certificate of Anil et al. 2019 and Li et al. 2019):

        R(x) = (z_c(x) - max_{j != c} z_j(x)) / (sqrt(2) L),   c = argmax_j z_j(x)

    If x -> z is L-Lipschitz in L2, each difference z_c - z_j is sqrt(2) L-Lipschitz, so no
    ||x' - x||_2 < R(x) changes the prediction. It holds only for a model whose Lipschitz
    constant really is at most `lipschitz` (default 1: a GNP network of `OrthogonalConv2d`,
    `GroupSort` and `BjorckLinear`, with enough Björck iterations); it is not checked. Returns
    (N,) on x's device, 0 where the top two logits tie; the model runs in eval mode, modes
    restored.
    """
    check_model(model)
    x = check_images(x, ndim=None)
    check_model_input(model, x)
    lipschitz = check_positive(lipschitz, "lipschitz")
    with eval_mode(model):
        z = logits_of(model, x)
    if z.shape[1] < 2:
        raise ValueError("gnp_radius needs a model with at least 2 logits")
    top2 = z.topk(2, dim=1).values
    return (top2[:, 0] - top2[:, 1]) / (math.sqrt(2) * lipschitz)

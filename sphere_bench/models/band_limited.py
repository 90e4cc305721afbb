"""Band-limited input: any SOFT-grid network evaluated on the band-limited projection of its input.

``BandLimited(φ)(x) = φ(P_B x)`` with ``P_B x = s2_ifft(s2_fft(x))`` the projection onto the
spherical harmonics of degree ``l < B`` (:mod:`sphere_bench.harmonic.s2_fft`, exact SOFT
quadrature, computed in float64). ``P_B`` commutes with rotations (``P_B R = R P_B``) and is
idempotent, so the spectral rotation ``R P_B x`` (:func:`sphere_bench.harmonic.signal_rotation.
rotate_s2`) of a training input is an input the wrapped network can meet at test time: the
projection of the re-rendered rotated image, up to the resampling floor.

Why it exists: the soft-equivariance penalty
(:func:`sphere_bench.train.equivariance_loss.equivariance_penalty`) compares ``φ(P_B x)`` with
``φ(R P_B x)``, while the cross-entropy sees the raw rendered ``x``. A plain CNN can tell the two
input distributions apart (at B = 16 the rendered MNIST digit is 20 % away from its projection in
relative L2, and the projection has Gibbs ringing below 0) and satisfies the penalty by emitting
constant logits on band-limited inputs while still classifying raw ones — trained with the penalty
it scores chance on rotated test images (README, "Soft-equivariance regulariser"). Wrapped, the
network sees only band-limited inputs in training, in the penalty and at test, so the shortcut is
gone.

Cost: one S² analysis and synthesis of the input batch per forward pass (cheap against the CNN).
"""

from __future__ import annotations

import torch
from torch import nn

from sphere_bench.harmonic.s2_fft import s2_fft, s2_ifft

__all__ = ["BandLimited", "band_limit"]


def band_limit(x: torch.Tensor) -> torch.Tensor:
    """``P_B x``: the projection of SOFT-grid signals onto degrees ``l < B``.

    Args:
        x: ``[..., 2B, 2B]`` real signals on the SOFT grid ``[β, α]``.

    Returns:
        The band-limited signals, same shape and dtype (computed in float64).

    Raises:
        ValueError: if the last two axes are not ``2B × 2B`` with ``B ≥ 1``.
    """
    if x.dim() < 2 or x.shape[-1] != x.shape[-2] or x.shape[-1] % 2 or x.shape[-1] < 2:
        raise ValueError(f"expected SOFT-grid signals [..., 2B, 2B], got shape {tuple(x.shape)}")
    return s2_ifft(s2_fft(x.to(torch.float64))).to(x.dtype)


class BandLimited(nn.Module):
    """``φ ∘ P_B``: the wrapped net sees the band-limited projection of its input (module doc).

    Args:
        net: ``[N, C, 2B, 2B] →`` logits, e.g. a CNN of :mod:`sphere_bench.models.cnn_zoo`.
        bandwidth: optional, must equal ``net.bandwidth`` (lets configs carry the key).

    Parameters are exactly those of ``net``; ``task``, ``bandwidth`` and ``num_classes`` are
    passed through.

    Raises:
        ValueError: a bandwidth that differs from the net's, or (in ``forward``) an input whose
            grid is not ``2B × 2B`` for that bandwidth.
    """

    def __init__(self, net: nn.Module, bandwidth: int | None = None) -> None:
        super().__init__()
        net_bandwidth = getattr(net, "bandwidth", None)
        if bandwidth is not None and net_bandwidth is not None and bandwidth != net_bandwidth:
            raise ValueError(
                f"bandwidth={bandwidth} but the wrapped net is built for B={net_bandwidth}; set "
                "model.bandwidth and model.net.bandwidth to the same value"
            )
        self.net = net
        self.bandwidth = net_bandwidth if net_bandwidth is not None else bandwidth
        self.task = getattr(net, "task", None)
        self.num_classes = getattr(net, "num_classes", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bandwidth is not None and tuple(x.shape[-2:]) != (2 * self.bandwidth,) * 2:
            raise ValueError(
                f"input grid {tuple(x.shape[-2:])} does not match bandwidth B={self.bandwidth} "
                f"(expected {2 * self.bandwidth} x {2 * self.bandwidth}); set data.bandwidth to "
                "the model's bandwidth"
            )
        return self.net(band_limit(x))

    def extra_repr(self) -> str:
        return f"bandwidth={self.bandwidth}"

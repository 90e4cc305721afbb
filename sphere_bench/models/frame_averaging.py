"""Frame averaging: any CNN made exactly rotation invariant or equivariant on the SOFT grid.

Frame averaging (Puny et al., "Frame Averaging for Invariant and Equivariant Network Design",
ICLR 2022, eq. 3–4) averages a network ``φ`` over a small *input-dependent* set of group elements,
a frame ``F(x) ⊂ SO(3)`` with ``F(R x) = R F(x)`` (as sets):

    invariant    Φ(x) = 1/|F(x)| Σ_{g ∈ F(x)} φ(g⁻¹ x)              (classification logits)
    equivariant  Φ(x) = 1/|F(x)| Σ_{g ∈ F(x)} g · φ(g⁻¹ x)          (segmentation logits)

so that ``Φ(R x) = Φ(x)`` (resp. ``R Φ(x)``) for every rotation ``R``; with one frame element this
is canonicalisation (Kaba et al., "Equivariance with Learned Canonicalization Functions", ICML
2023). Rotating a signal means ``(R f)(x) = f(R⁻¹ x)`` (:mod:`sphere_bench.harmonic.rotations`).

The frame (Puny et al. §3.1, the PCA frame of point clouds, transferred to a spherical image
``f``): the eigenvectors ``V = [v₁ v₂ v₃]`` (eigenvalues ascending) of the second-moment tensor

    M(f) = ∫_{S²} f(x) x xᵀ dx ≈ (π/B) Σ_{j,k} w_j f(β_j, α_k) x_{jk} x_{jk}ᵀ

(SOFT quadrature weights ``w_j``, :func:`sphere_bench.harmonic.grids.soft_quadrature_weights``;
channels are summed first). The entries of ``x xᵀ`` are polynomials of degree ≤ 2, so ``M`` depends
only on the degree-0 and degree-2 harmonic coefficients of ``f``, and the quadrature gives exactly
those of the band-limited ``P_B f``. ``M(R f) = R M(f) Rᵀ``, so the eigenvectors rotate with the
image up to their signs; the four sign patterns ``V diag(s)`` with ``det = +1`` (after making
``det V = +1``) are the frame, ``|F(x)| = 4`` — which sign ``eigh`` returns does not matter.

Exactness. ``g⁻¹ x`` and ``g · φ(·)`` are computed by spectral rotation
(:func:`sphere_bench.harmonic.signal_rotation.rotate_s2`, Wigner-D in float64), which is exact for
band-limited signals and otherwise rotates the band-limited projection ``P_B``. Hence:

* for rotations that map the grid to itself (longitude shifts by multiples of ``π/B``, the half
  turn ``Ry(π)``) and for spectral rotations of band-limited inputs, ``Φ`` is invariant /
  equivariant to float rounding (≈ 1e-6 relative in float32; tested);
* for an input re-rendered under a Haar rotation, ``M`` is computed from samples that are not
  the rotated samples of the original; the error is then set by that resampling floor (how far
  ``P_B`` of the re-rendered image is from the rotated ``P_B`` of the original), amplified by
  ``1 / gap`` through the eigenvectors (below);
* segmentation outputs are band-limited (``P_B``) by the final rotation ``g · φ``.

(Near-)degenerate eigenvalues. The eigenvectors of a pair of (nearly) equal eigenvalues are not
determined (Davis–Kahan: a perturbation ``ε`` of ``M`` turns them by ``~ε / gap``): an image with
an axis of symmetry (a disc, a ring) has ``λ₁ = λ₂`` or ``λ₂ = λ₃`` and ``eigh`` returns an
arbitrary basis of the eigenspace, so ``F(R x) ≠ R F(x)`` and exactness is lost for that input;
no continuous frame of size 4 exists for all inputs (Dym, Lawrence & Siegel, ICML 2024). The wrapper
does not change the frame (any tie-break rule, e.g. a fixed reference axis, is itself not
rotation-equivariant); it measures the relative gap
``min(λ₂ − λ₁, λ₃ − λ₂) / (|λ₁| + |λ₂| + |λ₃|)`` of every input, keeps the last batch's gaps in
:attr:`FrameAveraged.last_gaps`, counts the inputs below ``gap_tolerance`` in
:attr:`FrameAveraged.degenerate_count` and logs a warning (``degenerate="warn"``; ``"error"``
raises, ``"ignore"`` stays silent). The averaging over the four signs keeps the output a smooth
function of the eigenvectors; only the basis choice inside a degenerate eigenspace is arbitrary.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from sphere_bench.harmonic.grids import (
    angles_to_xyz,
    soft_alphas,
    soft_betas,
    soft_quadrature_weights,
)
from sphere_bench.harmonic.signal_rotation import rotate_s2
from sphere_bench.schema import TASKS

__all__ = ["FrameAveraged", "second_moment", "pca_frames", "relative_gaps", "SIGN_PATTERNS"]

log = logging.getLogger(__name__)

#: The four sign patterns ``s`` with ``Π s = +1``: ``V diag(s)`` keeps ``det = +1``.
SIGN_PATTERNS = torch.tensor(
    [[1.0, 1.0, 1.0], [-1.0, -1.0, 1.0], [-1.0, 1.0, -1.0], [1.0, -1.0, -1.0]], dtype=torch.float64
)
DEGENERATE_MODES = ("warn", "error", "ignore")

_moment_cache: dict[tuple[int, str], torch.Tensor] = {}


def _moment_kernel(bandwidth: int, device: torch.device) -> torch.Tensor:
    """``(π/B) w_j x x ᵀ`` on the SOFT grid: float64 ``[2B, 2B, 3, 3]``."""
    key = (bandwidth, str(device))
    kernel = _moment_cache.get(key)
    if kernel is None:
        beta, alpha = torch.meshgrid(
            torch.from_numpy(soft_betas(bandwidth)), torch.from_numpy(soft_alphas(bandwidth)),
            indexing="ij",
        )  # fmt: skip
        xyz = torch.from_numpy(angles_to_xyz(beta.numpy(), alpha.numpy()))  # [2B, 2B, 3]
        w = torch.from_numpy(soft_quadrature_weights(bandwidth)) * (torch.pi / bandwidth)
        kernel = (w[:, None, None, None] * xyz[..., :, None] * xyz[..., None, :]).to(device)
        _moment_cache[key] = kernel
    return kernel


def second_moment(x: torch.Tensor) -> torch.Tensor:
    """Second-moment tensor ``M = ∫ f(x) x xᵀ dx`` of SOFT-grid images (channels summed).

    Args:
        x: ``[N, C, 2B, 2B]`` (or ``[N, 2B, 2B]``) real signals on the SOFT grid ``[β, α]``.

    Returns:
        float64 ``[N, 3, 3]`` symmetric matrices, by SOFT quadrature (module docstring); for a
        rotated image ``R f`` it is ``R M Rᵀ``.

    Raises:
        ValueError: if the last two axes are not ``2B × 2B`` with ``B ≥ 2``.
    """
    if x.dim() not in (3, 4) or x.shape[-1] != x.shape[-2] or x.shape[-1] % 2 or x.shape[-1] < 4:
        raise ValueError(
            f"expected SOFT-grid images [N, C, 2B, 2B] (B >= 2), got shape {tuple(x.shape)}"
        )
    f = x.detach().to(torch.float64)
    if f.dim() == 4:
        f = f.sum(1)
    kernel = _moment_kernel(x.shape[-1] // 2, f.device)
    return torch.einsum("njk,jkab->nab", f, kernel)


def relative_gaps(eigenvalues: torch.Tensor) -> torch.Tensor:
    """``min(λ₂ − λ₁, λ₃ − λ₂) / (|λ₁| + |λ₂| + |λ₃|)`` for ascending ``[..., 3]`` eigenvalues."""
    gaps = torch.minimum(eigenvalues[..., 1] - eigenvalues[..., 0],
                         eigenvalues[..., 2] - eigenvalues[..., 1])  # fmt: skip
    return gaps / eigenvalues.abs().sum(-1).clamp_min(1e-300)


def pca_frames(moment: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The four-element PCA frame of each second-moment tensor.

    Args:
        moment: ``[N, 3, 3]`` symmetric matrices (float64 recommended).

    Returns:
        ``(frames, gaps)``: ``frames`` ``[N, 4, 3, 3]`` proper rotations ``V diag(s)`` (columns =
        eigenvectors in ascending eigenvalue order, ``s`` from :data:`SIGN_PATTERNS`), and the
        relative eigenvalue gaps ``[N]`` (:func:`relative_gaps`).
    """
    eigenvalues, vectors = torch.linalg.eigh(moment)
    det = torch.linalg.det(vectors)
    flip = torch.ones_like(eigenvalues)
    flip[:, 2] = torch.where(det < 0, -1.0, 1.0).to(flip.dtype)
    vectors = vectors * flip[:, None, :]  # det V = +1
    signs = SIGN_PATTERNS.to(vectors.device, vectors.dtype)
    frames = vectors[:, None, :, :] * signs[None, :, None, :]
    return frames, relative_gaps(eigenvalues)


class FrameAveraged(nn.Module):
    """Frame-averaged wrapper of any SOFT-grid network (module docstring).

    Args:
        net: ``[N, C_in, 2B, 2B] → [N, K]`` (classification) or ``[N, K, 2B, 2B]``
            (segmentation) logits, e.g. a CNN of :mod:`sphere_bench.models.cnn_zoo`.
        task: ``classification`` (invariant average of logits) or ``segmentation`` (equivariant
            average); default: ``net.task``.
        bandwidth: optional, must equal ``net.bandwidth`` (lets configs carry the key).
        gap_tolerance: relative eigenvalue gap below which an input counts as degenerate.
        degenerate: ``warn`` (log a warning), ``error`` (raise ``ValueError``) or ``ignore``.

    The cost is four forward passes of ``net`` plus one spectral rotation of the input batch
    (and of the output, for segmentation). Parameters are exactly those of ``net``.

    Raises:
        ValueError: unknown task or degenerate mode, or a bandwidth that differs from the net's.
    """

    def __init__(
        self,
        net: nn.Module,
        task: str | None = None,
        bandwidth: int | None = None,
        gap_tolerance: float = 1e-3,
        degenerate: str = "warn",
    ) -> None:
        super().__init__()
        task = task if task is not None else getattr(net, "task", None)
        if task not in TASKS:
            raise ValueError(
                f"task must be classification or segmentation (or a net with a .task), got {task!r}"
            )
        if degenerate not in DEGENERATE_MODES:
            raise ValueError(f"degenerate must be one of {list(DEGENERATE_MODES)}, got "
                             f"{degenerate!r}")  # fmt: skip
        net_bandwidth = getattr(net, "bandwidth", None)
        if bandwidth is not None and net_bandwidth is not None and bandwidth != net_bandwidth:
            raise ValueError(
                f"bandwidth={bandwidth} but the wrapped net is built for B={net_bandwidth}; set "
                "model.bandwidth and model.net.bandwidth to the same value"
            )
        if not gap_tolerance >= 0:
            raise ValueError(f"gap_tolerance must be >= 0, got {gap_tolerance!r}")
        self.net = net
        self.task = task
        self.bandwidth = net_bandwidth if net_bandwidth is not None else bandwidth
        self.num_classes = getattr(net, "num_classes", None)
        self.gap_tolerance = float(gap_tolerance)
        self.degenerate = degenerate
        self.degenerate_count = 0
        self.last_gaps: torch.Tensor | None = None

    def frames(self, x: torch.Tensor) -> torch.Tensor:
        """The frames ``[N, 4, 3, 3]`` (float64) of the inputs, with the degeneracy check."""
        frames, gaps = pca_frames(second_moment(x))
        self.last_gaps = gaps.detach().cpu()
        low = int((gaps < self.gap_tolerance).sum())
        if low:
            self.degenerate_count += low
            message = (
                f"frame averaging: {low} of {x.shape[0]} inputs have a relative eigenvalue gap "
                f"< {self.gap_tolerance:g} (smallest {float(gaps.min()):.2e}); their frame is "
                "not unique and the output is not exactly invariant for them"
            )
            if self.degenerate == "error":
                raise ValueError(message + "; use degenerate='warn' to continue")
            if self.degenerate == "warn":
                log.warning(message)
        return frames

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        frames = self.frames(x)  # [N, 4, 3, 3]
        k = frames.shape[1]
        g = frames.reshape(n * k, 3, 3).to(x.device)
        canonical = rotate_s2(x.repeat_interleave(k, 0), g.transpose(-1, -2))  # g⁻¹ x
        out = self.net(canonical.to(x.dtype))
        if self.task == "classification":
            return out.reshape(n, k, *out.shape[1:]).mean(1)
        out = rotate_s2(out, g)  # g · φ(g⁻¹ x)
        return out.reshape(n, k, *out.shape[1:]).mean(1)

    def extra_repr(self) -> str:
        return f"task={self.task}, frame=pca(4), gap_tolerance={self.gap_tolerance:g}"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["last_gaps"] = None
        return state

"""S2CNN layers (Cohen et al. 2018; s2cnn / the paper's fork, spec §3.1, §7) in pure PyTorch.

Shapes: S² signals ``[N, C, 2B, 2B]`` (``[β, α]``), SO(3) signals ``[N, C, 2B, 2B, 2B]``
(``[β, α, γ]``) on the SOFT grid, in s2cnn's 'quantum', centered, Condon–Shortley normalisation
(:mod:`sphere_bench.harmonic.s2_fft`, :mod:`sphere_bench.harmonic.so3_fft`).

Implementation (one layer = analysis → per-degree products → synthesis):

* SO(3) grids travel between layers in the spatial-major memory layout ``[α, γ, N, C, β]``
  of :mod:`sphere_bench.harmonic.so3_fft` (exposed as ``[N, C, β, α, γ]`` views): the angle DFTs
  are GEMMs on the
  outer axes, the Wigner-d contractions batched GEMMs over ``(m, n)`` pairs, with no layout
  copies of grid-sized data. Any pointwise module between layers (the nonlinearity) keeps
  that layout; an input in another layout costs one copy.
* The per-degree kernel products ``[(m, N), (k, C)] @ [(k, C), (n, D)]`` (most of a layer's
  FLOPs) group the degrees ``0 … L−1`` into at most 6 chunks (:meth:`degree_chunks`, a cost
  model minimised exactly), one padded batched GEMM each: the structural zeros
  ``|m|, |k|, |n| > l`` are mostly skipped (≤ ~1.25× the unpadded FLOPs) while the number of
  kernels per layer stays constant (no Python loop over degrees). The Wigner-d contractions are
  one batched GEMM over all pairs per transform: their zero blocks ``l < max(m, |n|)`` cost a
  small share of the layer, and reading the data once is faster on a CPU than skipping them
  in several passes.
* The bias is added to the degree-0 coefficient before synthesis (exactly a constant on the
  grid). Kernel spectra are computed from the structured grids by small FFTs (over α) and a
  3-angle Wigner-d sum — never a dense ``[|grid|, nspec]`` matrix.

Hooks for variants: :meth:`_GridKernelCorrelation.spectral_degrees` (degrees carried from input
to output: the bandwidth change; the synthesis zero-pads degrees ``L ≤ l < b_out``) and
:meth:`_GridKernelCorrelation._synthesize` (the synthesis step of the SO(3)-valued layers). The
nonlinearity is not part of a layer: the zoo puts an ``nn.ReLU`` between layers.

Every layer is a correlation with a kernel ``ψ`` that lives on a near-identity grid
(:mod:`sphere_bench.harmonic.kernel_grids`) and is parameterised exactly as in s2cnn: ``kernel`` of
shape
``[C_in, C_out, |grid|]`` initialised ``U(−1, 1)``, multiplied by a fixed ``scaling``, plus a zero
initialised ``bias``. In the continuum, with ``f̃`` the band-limited (``l < min(b_in, b_out)``)
projection of the input:

* :class:`S2Convolution` (S² → SO(3)):
  ``y_d(R) = 2 b_out Σ_{c,i} ψ_{cdi} f̃_c(R x_i) + bias_d``; spectrally
  ``z^l_{mn} = 2 b_out Σ_c F^l_m(c) conj(Σ_i ψ_{cdi} D^l_{n0}(α_i, β_i, 0))``,
  ``scaling = 1/sqrt(|grid| · C_in · b_out⁴ / b_in²)``.
* :class:`SO3Convolution` (SO(3) → SO(3)): ``y_d(R) = Σ_{c,i} ψ_{cdi} f̃_c(R g_i) + bias_d``;
  ``z^l_{mn} = Σ_{c,k} F^l_{mk}(c) conj(K^l_{nk}(c, d))``, ``K^l_{nk} = Σ_i ψ_i D^l_{nk}(g_i)``,
  ``scaling = 1/sqrt(|grid| · C_in · b_out³ / b_in³)``.
* :class:`SO3ToS2Convolution` (SO(3) → S², spec §7.3): ``h^l_m = Σ_{c,k} F^l_{mk}(c)
  conj(κ^l_k(c, d))`` followed by the inverse S² transform onto ``2b_out × 2b_out`` plus bias.
  The reference sums ``z^l_{mn}`` over ``n`` and takes the real part of the complex synthesis;
  on real signals that equals ``κ^l_k = Σ_{n even} K^l_{nk}`` used here (the odd-``n`` terms
  cancel against their ``−m`` mirror). Same scaling as SO3Convolution.

The factor ``2 b_out`` and the scalings are s2cnn's. **Kernel-point order**: ``kernel[:, :, i]``
is the weight of the same grid point as in s2cnn (β-major, then α, then pre-γ; see
:mod:`sphere_bench.harmonic.kernel_grids`), so a reference state_dict loads without relabelling
(:mod:`.s2cnn_import`). Verified with the paper's code (``scripts/compare_reference_s2cnn.py``):
with identical weights every layer agrees to a relative difference < 1e-6 in float32 (layers
that raise the bandwidth with ``upsampling="paper"``), where a relabelling would give O(1).

Every layer is equivariant: rotating the input by ``R`` (left action) rotates the output by
``R``; exactly for grid rotations, to rounding for band-limited inputs and arbitrary ``R``.
Bandwidth changes are exact spectral truncation or zero padding (``upsampling="exact"``, the
default). ``upsampling="paper"`` makes the SO(3)-input layers that raise the bandwidth
(``b_in < b_out``) carry ``b_out`` degrees, evaluating ``b_in ≤ l < b_out`` by quadrature on the
coarse grid as the reference does (aliasing; :mod:`sphere_bench.harmonic.paper_upsampling`);
S2Convolution stays
exact (the reference's S² transform cannot up-sample). Kernel spectra are computed
from the structured grids by small FFTs (over α) and a 3-angle Wigner-d sum — never a dense
``[|grid|, nspec]`` matrix.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from sphere_bench.harmonic.grids import check_bandwidth
from sphere_bench.harmonic.kernel_grids import (
    S2KernelGrid,
    SO3KernelGrid,
    s2_near_identity_grid,
    so3_near_identity_grid,
)
from sphere_bench.harmonic.paper_upsampling import check_upsampling, so3_analysis_aliased
from sphere_bench.harmonic.s2_fft import s2_analysis_pairs, s2_synthesis_pairs
from sphere_bench.harmonic.so3_fft import (
    so3_analysis_spatial,
    so3_from_spatial_major,
    so3_integrate,
    so3_spatial_major,
    so3_synthesis_spatial,
)
from sphere_bench.harmonic.wigner import (
    _cached,
    kernel_chunk_table,
    kernel_d_table,
    plan_degree_chunks,
)

__all__ = ["S2Convolution", "SO3Convolution", "SO3ToS2Convolution", "so3_integrate"]


def _check_features(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _complex_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype == torch.float64 else torch.complex64


# Fixed cost of one more degree chunk, in FLOP-equivalents (≈ 40 µs of one core's GEMM time:
# the launches and copies a chunk adds in the forward and backward pass).
CHUNK_OVERHEAD_FLOPS = 2.0e6


def _row_block(spec6: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """The chunk ``[lo, hi)`` of ``spec6`` ``[L, 2L−1, 2, N, C, L]`` (``[m, n' + L − 1, r, N, C,
    l]``) as a real view ``[l, m, N, k, C, r]`` (``m < hi``, ``|k| < hi``)."""
    L = spec6.shape[0]
    return spec6[:hi, L - hi : L + hi - 1, :, :, :, lo:hi].permute(5, 0, 3, 1, 4, 2)


def _gather_blocks(
    spec6: torch.Tensor, chunks: tuple[tuple[int, int], ...], n: int, c: int
) -> tuple[torch.Tensor, ...]:
    """Every chunk's block of ``spec6`` (:func:`_row_block`) as a complex matrix
    ``[l, (m, N), (k, C)]``: one copy per chunk."""
    return tuple(
        torch.view_as_complex(_row_block(spec6, lo, hi).contiguous())
        .view(hi - lo, hi * n, (2 * hi - 1) * c)
        for lo, hi in chunks
    )


def _scatter_blocks(
    spec6: torch.Tensor, blocks: tuple[torch.Tensor | None, ...],
    chunks: tuple[tuple[int, int], ...], n: int, c: int,
) -> None:
    """Write the complex ``[l, (m, N), (k, C)]`` blocks (``None``: skipped) into their chunks of
    ``spec6`` (:func:`_row_block`), in place: the inverse of :func:`_gather_blocks`."""
    for block, (lo, hi) in zip(blocks, chunks, strict=True):
        if block is not None:
            real = torch.view_as_real(block).view(hi - lo, hi, n, 2 * hi - 1, c, 2)
            _row_block(spec6, lo, hi).copy_(real)


class _DegreeRows(torch.autograd.Function):
    """Analysis ``[(m, n'), (r, N, C), l]``
    (:func:`sphere_bench.harmonic.so3_fft.so3_analysis_spatial`) → for every degree chunk
    ``[lo, hi)`` the complex left operands ``[l, (m, N), (k, C)]`` (``m < hi``, ``|k| < hi``) of
    its per-degree products: one copy per chunk.

    Autograd's own backward of per-chunk slices would allocate a zero tensor of the whole
    spectrum for every chunk and add them up; this one writes all chunk gradients into a single
    zeroed spectrum (one fill, one copy per chunk)."""

    @staticmethod
    def forward(ctx, spec: torch.Tensor, num_degrees: int, n: int, c: int,
                chunks: tuple[tuple[int, int], ...]) -> tuple[torch.Tensor, ...]:
        L = num_degrees
        ctx.meta = (spec.shape, spec.dtype, spec.device, L, n, c, chunks)
        return _gather_blocks(spec.view(L, 2 * L - 1, 2, n, c, L), chunks, n, c)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor | None):
        shape, dtype, device, L, n, c, chunks = ctx.meta
        out = torch.zeros(shape, dtype=dtype, device=device)
        _scatter_blocks(out.view(L, 2 * L - 1, 2, n, c, L), grads, chunks, n, c)
        return out, None, None, None, None


class _SynthesisOperand(torch.autograd.Function):
    """Per-chunk products ``z[l, (m, N), (n', D)]`` (complex, ``m, |n'| < hi``) and the bias →
    the synthesis operand ``[L, 2L−1, 2, N, D, L]`` (``[m, n' + L − 1, r, N, D, l]``, real/
    imaginary part ``r``; zero outside the chunks' blocks) with the bias added to
    ``Re z^0_{00}``: the degree-0 term of the synthesis is the constant ``z^0_{00}``, so this adds
    the bias to every grid point (one add per channel instead of a pass over the grid).

    One zeroed buffer and one copy per chunk; the backward gathers each chunk's block of the
    incoming gradient (autograd's own backward of in-place block writes would clone the whole
    buffer's gradient once per chunk)."""

    @staticmethod
    def forward(ctx, bias: torch.Tensor, num_degrees: int, n: int, d: int,
                chunks: tuple[tuple[int, int], ...], *zs: torch.Tensor) -> torch.Tensor:
        L = num_degrees
        ctx.meta = (bias.shape, L, n, d, chunks)
        buf = torch.zeros(L, 2 * L - 1, 2, n, d, L, dtype=bias.dtype, device=bias.device)
        _scatter_blocks(buf, zs, chunks, n, d)
        buf[0, L - 1, 0, :, :, 0] += bias.reshape(1, d)
        return buf

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        bias_shape, L, n, d, chunks = ctx.meta
        # contiguous first: the same summation order as autograd's own broadcast backward, so
        # training reproduces earlier runs bit for bit
        grad_bias = grad[0, L - 1, 0, :, :, 0].contiguous().sum(0).reshape(bias_shape)
        return (grad_bias, None, None, None, None, *_gather_blocks(grad, chunks, n, d))


def _so3_phi(
    kernel: torch.Tensor, grid: SO3KernelGrid, num_degrees: int
) -> torch.Tensor:
    """``Φ[c, d, b, n, k] = Σ_{a,p} ψ[c, d, b, a, p] e^{−i(n−k)α_a} e^{−ik preγ_p}``.

    ``n, k = −(L−1) … L−1``; uses an FFT over the uniform α values.
    """
    c, d = kernel.shape[:2]
    nb, na, npg = len(grid.betas), grid.n_alpha, len(grid.pre_gammas)
    size = 2 * num_degrees - 1
    cdt = _complex_dtype(kernel.dtype)
    psi = kernel.reshape(c, d, nb, na, npg).to(cdt)
    k = torch.arange(-(num_degrees - 1), num_degrees, device=kernel.device)
    pre = torch.tensor(grid.pre_gammas, dtype=torch.float64, device=kernel.device)
    phase = torch.exp(-1j * pre[:, None] * k[None, :].to(torch.float64)).to(cdt)  # [p, k]
    g = torch.matmul(psi, phase)  # [c, d, b, a, k]
    g = torch.fft.fft(g, dim=3)  # [c, d, b, q, k],  q ↔ (n − k) mod n_α
    q = torch.remainder(k[:, None] - k[None, :], na)  # [n, k]
    kk = torch.arange(size, device=kernel.device)[None, :].expand(size, size)
    return g[:, :, :, q, kk]  # [c, d, b, n, k]


class _GridKernelCorrelation(nn.Module):
    """Shared parameterisation of the S2CNN layers (s2cnn's, see the module docstring).

    ``kernel`` ``[C_in, C_out, |grid|]`` initialised ``U(−1, 1)`` and multiplied by the fixed
    ``scaling = 1/sqrt(|grid| · C_in · b_out^p / b_in^q)`` with ``(p, q) = scale_powers``, and a
    zero-initialised ``bias`` broadcast over the output grid. Subclasses set ``input_dims``,
    ``output_dims`` (tensor ranks incl. batch and channel), ``scale_powers`` and ``default_grid``
    (the near-identity grid used when ``grid`` is None).
    """

    input_dims: int
    output_dims: int
    scale_powers: tuple[int, int]
    default_grid: Callable[[], S2KernelGrid | SO3KernelGrid]

    def __init__(
        self,
        nfeature_in: int,
        nfeature_out: int,
        b_in: int,
        b_out: int,
        grid: S2KernelGrid | SO3KernelGrid | None = None,
        upsampling: str = "exact",
    ) -> None:
        super().__init__()
        self.upsampling = check_upsampling(upsampling)
        grid = self.default_grid() if grid is None else grid
        _check_features("nfeature_in", nfeature_in)
        _check_features("nfeature_out", nfeature_out)
        check_bandwidth(b_in)
        check_bandwidth(b_out)
        self.nfeature_in, self.nfeature_out = nfeature_in, nfeature_out
        self.b_in, self.b_out = b_in, b_out
        self.grid = grid
        self.kernel = nn.Parameter(torch.empty(nfeature_in, nfeature_out, grid.size))
        bias_shape = (1, nfeature_out, *([1] * (self.output_dims - 2)))
        self.bias = nn.Parameter(torch.zeros(bias_shape))
        p, q = self.scale_powers
        self.scaling = 1.0 / math.sqrt(grid.size * nfeature_in * b_out**p / b_in**q)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.uniform_(self.kernel, -1.0, 1.0)
        nn.init.zeros_(self.bias)

    def spectral_degrees(self) -> int:
        """Degrees ``L`` carried from input to output: ``min(b_in, b_out)``.

        The hook of the bandwidth change: analysis truncates the input to ``l < L`` and
        synthesis zero-pads degrees ``L ≤ l < b_out`` (exact up-sampling). A variant that treats
        up-sampling differently overrides this method and the synthesis step of ``forward``.
        With ``upsampling="paper"`` an SO(3)-input layer with ``b_in < b_out`` carries ``b_out``
        degrees (:meth:`_so3_analysis` aliases the higher ones, as the reference does).
        """
        if self.upsampling == "paper" and self.input_dims == 5 and self.b_in < self.b_out:
            return self.b_out
        return min(self.b_in, self.b_out)

    def _so3_analysis(self, x: torch.Tensor, num_degrees: int) -> torch.Tensor:
        """Forward SO(3) transform of ``x`` ``[N, C, 2b_in, 2b_in, 2b_in]`` in the layout of
        :func:`sphere_bench.harmonic.so3_fft.so3_analysis_spatial` (``[(m, n), (r, N, C), l]``):
        exact, or the
        reference's aliased one when :meth:`spectral_degrees` exceeds ``b_in``."""
        if num_degrees > self.b_in:
            L, p = num_degrees, x.shape[0] * x.shape[1]
            spec = so3_analysis_aliased(x.reshape(-1, *x.shape[2:]), L)  # [m, n, l, P]
            spec = torch.view_as_real(spec).permute(0, 1, 4, 3, 2)
            return spec.reshape(L * (2 * L - 1), 2 * p, L)
        return so3_analysis_spatial(so3_spatial_major(x), num_degrees)

    def _chunk_cost(self, n: int, lo: int, hi: int) -> float:
        """FLOPs of one padded degree chunk (analysis, product, synthesis) at batch ``n``."""
        raise NotImplementedError

    def degree_chunks(self, n: int) -> tuple[tuple[int, int], ...]:
        """The degree chunks used at batch size ``n``
        (:func:`sphere_bench.harmonic.wigner.plan_degree_chunks`).

        The per-degree blocks grow like ``(l+1)(2l+1)²``; a chunk pads its degrees to its
        largest one, so more chunks waste fewer FLOPs on structural zeros but add launches. The
        plan minimises their sum; it is cached per batch size.
        """
        plans = self.__dict__.setdefault("_chunk_plans", {})
        plan = plans.get(n)
        if plan is None:
            plan = plan_degree_chunks(
                self.spectral_degrees(), lambda lo, hi: self._chunk_cost(n, lo, hi),
                CHUNK_OVERHEAD_FLOPS,
            )
            plans[n] = plan
        return plan

    def _synthesize(self, products: list[torch.Tensor], chunks: tuple[tuple[int, int], ...],
                    n: int) -> torch.Tensor:
        """Synthesis step (bias included) of the SO(3)-valued layers: the per-chunk products
        ``z[l, (m, N), (n', D)]`` → the output view ``[N, C_out, 2b_out, 2b_out, 2b_out]`` of
        spatial-major memory."""
        d, L = self.nfeature_out, self.spectral_degrees()
        buf = _SynthesisOperand.apply(self.bias, L, n, d, chunks, *products)
        y = so3_synthesis_spatial(buf.view(*buf.shape[:3], n * d, buf.shape[-1]), self.b_out)
        return so3_from_spatial_major(y, n, d)

    def _check_input(self, x: torch.Tensor) -> None:
        size = 2 * self.b_in
        expected = [self.nfeature_in] + [size] * (self.input_dims - 2)
        if x.dim() != self.input_dims or list(x.shape[1:]) != expected:
            shape = ", ".join(str(v) for v in expected)
            raise ValueError(
                f"{type(self).__name__} expects [N, {shape}], got {tuple(x.shape)}"
            )

    def extra_repr(self) -> str:
        return (f"{self.nfeature_in}->{self.nfeature_out}, b {self.b_in}->{self.b_out}, "
                f"grid={self.grid.size} pts")



class S2Convolution(_GridKernelCorrelation):
    """S² → SO(3) correlation (s2cnn ``S2Convolution``); see the module docstring.

    Args:
        nfeature_in: input channels ``C_in``.
        nfeature_out: output channels ``C_out``.
        b_in: input bandwidth (input ``[N, C_in, 2b_in, 2b_in]``).
        b_out: output bandwidth (output ``[N, C_out, 2b_out, 2b_out, 2b_out]``).
        grid: kernel grid (default :func:`s2_near_identity_grid`, 24 points).
        upsampling: ``"exact"`` or ``"paper"`` (accepted for a uniform interface; the S² layer
            is always exact, the reference's S² transform cannot up-sample).
    """

    input_dims = 4
    output_dims = 5
    scale_powers = (4, 2)
    default_grid = staticmethod(s2_near_identity_grid)

    def kernel_spectrum_conj(self, num_degrees: int) -> torch.Tensor:
        """``conj(Ψ^l_n(c, d))``, ``Ψ = 2 b_out Σ_i ψ_i D^l_{n0}(x_i)``: ``[2L−1, L, C, D]``."""
        L = num_degrees
        c, d = self.nfeature_in, self.nfeature_out
        nb, na = len(self.grid.betas), self.grid.n_alpha
        psi = (self.kernel * (self.scaling * 2 * self.b_out)).reshape(c, d, nb, na)
        g = torch.fft.fft(psi.to(_complex_dtype(psi.dtype)), dim=-1)  # [c, d, b, q]
        n = torch.arange(-(L - 1), L, device=psi.device)
        phi = g[..., torch.remainder(n, na)]  # [c, d, b, n]
        table = kernel_d_table(L, self.grid.betas, psi.dtype, psi.device)
        d0 = table.view(2 * L - 1, 2 * L - 1, L, nb)[:, L - 1]  # [n, l, b] = d^l_{n0}(β_b)
        spec = torch.einsum("nlb,cdbn->nlcd", d0.to(phi.dtype), phi)
        return spec.conj()

    def _chunk_cost(self, n: int, lo: int, hi: int) -> float:
        lc, w = hi - lo, 2 * hi - 1
        return float(8 * lc * hi * n * self.nfeature_in * w * self.nfeature_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, C_in, 2b_in, 2b_in]`` → ``[N, C_out, 2b_out, 2b_out, 2b_out]``.

        The output is a permuted view of spatial-major memory ``[α, γ, N, C_out, β]``
        (:func:`sphere_bench.harmonic.so3_fft.so3_from_spatial_major`), the layout the next SO(3)
        layer reads.
        """
        self._check_input(x)
        n, c, d = x.shape[0], self.nfeature_in, self.nfeature_out
        L = self.spectral_degrees()
        spec = s2_analysis_pairs(x.reshape(n * c, *x.shape[2:]), L)  # [m, l, (N c)]
        psi = self.kernel_spectrum_conj(L)  # [n', l, c, d]
        chunks = self.degree_chunks(n)
        products = []
        for lo, hi in chunks:
            lc, win = hi - lo, slice(L - hi, L + hi - 1)
            a = spec[:hi, lo:hi].reshape(hi, lc, n, c).transpose(0, 1).reshape(lc, hi * n, c)
            k = psi[win, lo:hi].permute(1, 2, 0, 3).reshape(lc, c, (2 * hi - 1) * d)
            products.append(torch.bmm(a, k))  # z^l_{mn'}
        return self._synthesize(products, chunks, n)


class SO3Convolution(_GridKernelCorrelation):
    """SO(3) → SO(3) correlation (s2cnn ``SO3Convolution``); see the module docstring.

    Args:
        nfeature_in, nfeature_out: channels.
        b_in, b_out: bandwidths of input ``[N, C_in, 2b_in]*3`` and output ``[N, C_out, 2b_out]*3``.
        grid: kernel grid (default :func:`so3_near_identity_grid`, 192 points).
        upsampling: ``"exact"`` (zero-pad when ``b_in < b_out``) or ``"paper"`` (the
            reference's aliased higher degrees, :mod:`sphere_bench.harmonic.paper_upsampling`).
    """

    input_dims = 5
    output_dims = 5
    scale_powers = (3, 3)
    default_grid = staticmethod(so3_near_identity_grid)

    def kernel_spectrum(self, num_degrees: int) -> torch.Tensor:
        """``K^l_{nk}(c, d) = Σ_i ψ_i D^l_{nk}(g_i)`` as ``[2L−1(n), 2L−1(k), L, C, D]``.

        Reference/diagnostic form (dense in ``l``); :meth:`forward` builds it per degree chunk
        (:meth:`kernel_chunk`).
        """
        L = num_degrees
        size = 2 * L - 1
        c, d = self.nfeature_in, self.nfeature_out
        psi = self.kernel * self.scaling
        phi = _so3_phi(psi, self.grid, L)  # [c, d, b, n, k]
        nb = len(self.grid.betas)
        phi_r = torch.view_as_real(phi.permute(3, 4, 2, 0, 1).contiguous())  # [n, k, b, c, d, 2]
        phi_r = phi_r.reshape(size * size, nb, c * d * 2)
        table = kernel_d_table(L, self.grid.betas, psi.dtype, psi.device)  # [(n k), l, b]
        spec = torch.bmm(table, phi_r).view(size, size, L, c, d, 2)
        return torch.view_as_complex(spec)

    def _chunk_cost(self, n: int, lo: int, hi: int) -> float:
        lc, w = hi - lo, 2 * hi - 1
        c, d = self.nfeature_in, self.nfeature_out
        return float(8 * lc * hi * n * w * c * w * d)

    def kernel_chunk(self, phi_conj: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        """``conj(K^l_{nk}(c, d))`` for ``lo ≤ l < hi`` and ``|n|, |k| < hi`` as the right
        operands ``[l, (k, c), (n, d)]`` of the per-degree products.

        ``phi_conj``: ``conj(Φ)`` ``[c, d, b, n, k]`` over all ``|n|, |k| < L`` (:func:`_so3_phi`);
        ``K^l_{nk} = Σ_b d^l_{nk}(β_b) Φ[b, n, k]`` is one batched product over ``(n, k)``.
        """
        L = self.spectral_degrees()
        c, d = self.nfeature_in, self.nfeature_out
        w, lc, nb = 2 * hi - 1, hi - lo, len(self.grid.betas)
        win = slice(L - hi, L + hi - 1)
        ph = phi_conj[:, :, :, win, win].permute(3, 4, 2, 0, 1)  # [n, k, b, c, d]
        ph = torch.view_as_real(ph.contiguous()).reshape(w * w, nb, c * d * 2)
        table = kernel_chunk_table(L, self.grid.betas, lo, hi, ph.dtype, ph.device)
        k = torch.bmm(table, ph).view(w, w, lc, c, d, 2).permute(2, 1, 3, 0, 4, 5)
        return torch.view_as_complex(k.contiguous()).view(lc, w * c, w * d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, C_in, 2b_in, 2b_in, 2b_in]`` → ``[N, C_out, 2b_out, 2b_out, 2b_out]``.

        Reads and writes spatial-major memory
        (:func:`sphere_bench.harmonic.so3_fft.so3_spatial_major`); an input in
        another memory layout costs one copy.
        """
        self._check_input(x)
        n, c = x.shape[0], self.nfeature_in
        L = self.spectral_degrees()
        spec = self._so3_analysis(x, L)
        phi = torch.conj_physical(_so3_phi(self.kernel * self.scaling, self.grid, L))
        chunks = self.degree_chunks(n)
        rows = _DegreeRows.apply(spec, L, n, c, chunks)  # per chunk [l, (m N), (k c)]
        products = [torch.bmm(a, self.kernel_chunk(phi, lo, hi))  # [l, (m N), (n' d)]
                    for a, (lo, hi) in zip(rows, chunks, strict=True)]
        return self._synthesize(products, chunks, n)


class SO3ToS2Convolution(_GridKernelCorrelation):
    """SO(3) → S² correlation, the paper's segmentation head (spec §7.3).

    Input ``[N, C_in, 2b_in, 2b_in, 2b_in]``, output ``[N, C_out, 2b_out, 2b_out]``; kernel on an
    SO(3) grid (default 192 points), parameters ``C_in·C_out·|grid| + C_out``. ``upsampling`` as
    for :class:`SO3Convolution`.
    """

    input_dims = 5
    output_dims = 4
    scale_powers = (3, 3)
    default_grid = staticmethod(so3_near_identity_grid)

    def _even_table(self, L: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """``d^l_{nk}(β_b)`` for even ``n`` as ``[2L−1(k), L, nb·n_even]`` (cached)."""
        key = ("kernel_even", L, self.grid.betas, dtype, torch.device(device))

        def build() -> torch.Tensor:
            nb = len(self.grid.betas)
            size = 2 * L - 1
            table = kernel_d_table(L, self.grid.betas, dtype, device).view(size, size, L, nb)
            even = torch.from_numpy(np.flatnonzero(np.arange(-(L - 1), L) % 2 == 0)).to(device)
            t = table.index_select(0, even)  # [ne, k, l, b]
            return t.permute(1, 2, 3, 0).reshape(size, L, -1).contiguous()  # [k, l, (b ne)]

        return _cached(key, build)

    def kernel_spectrum(self, num_degrees: int) -> torch.Tensor:
        """``κ^l_k(c, d) = Σ_{n even} Σ_i ψ_i D^l_{nk}(g_i)`` as ``[2L−1(k), L, C, D]``."""
        L = num_degrees
        size = 2 * L - 1
        c, d = self.nfeature_in, self.nfeature_out
        psi = self.kernel * self.scaling
        phi = _so3_phi(psi, self.grid, L)  # [c, d, b, n, k]
        even = torch.arange(-(L - 1), L, device=psi.device).remainder(2) == 0
        phi = phi[:, :, :, even]  # [c, d, b, ne, k]
        phi_r = torch.view_as_real(phi.permute(4, 2, 3, 0, 1).contiguous())  # [k, b, ne, c, d, 2]
        phi_r = phi_r.reshape(size, -1, c * d * 2)
        table = self._even_table(L, psi.dtype, psi.device)  # [k, l, (b ne)]
        return torch.view_as_complex(torch.bmm(table, phi_r).view(size, L, c, d, 2))

    def _chunk_cost(self, n: int, lo: int, hi: int) -> float:
        lc, w = hi - lo, 2 * hi - 1
        return float(8 * lc * hi * n * w * self.nfeature_in * self.nfeature_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, C_in, 2b_in, 2b_in, 2b_in]`` → ``[N, C_out, 2b_out, 2b_out]`` (contiguous)."""
        self._check_input(x)
        n, c, d = x.shape[0], self.nfeature_in, self.nfeature_out
        L = self.spectral_degrees()
        spec = self._so3_analysis(x, L)
        kappa = self.kernel_spectrum(L).conj()  # [k, l, c, d]
        h = torch.zeros(L, L, n * d, dtype=kappa.dtype, device=x.device)  # [m, l, (N d)]
        chunks = self.degree_chunks(n)
        rows = _DegreeRows.apply(spec, L, n, c, chunks)  # per chunk [l, (m N), (k c)]
        for a, (lo, hi) in zip(rows, chunks, strict=True):
            lc = hi - lo
            k = kappa[L - hi : L + hi - 1, lo:hi].transpose(0, 1).reshape(lc, -1, d)
            h[:hi, lo:hi] = torch.bmm(a, k).view(lc, hi, n * d).transpose(0, 1)  # h^l_m
        y = s2_synthesis_pairs(h, self.b_out)
        size = 2 * self.b_out
        return y.view(n, d, size, size) + self.bias

"""VALID conv then 2x2/2 max-pooling, as one pure function with a fast training gradient.

`conv_max_pool(x, kernel)` is max_pool_2x2(conv(x, kernel)) for a plain HWIO conv kernel: the
layout nnx.Conv holds, so parameters, checkpoints and exports never learn about the speed-up.
Evaluated (inference, ONNX export) it is exactly that composition of standard ops; under
autodiff it runs a hand-written forward and backward. `conv_max_pool_reference` is the textbook
composition with JAX's own autodiff, for tests and for switching the trick off.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2/2 max-pooling as the max of four strided slices: (B, H, W, C) -> (B, H/2, W/2, C).

    Same values as lax.reduce_window. lax.slice (not x[:, ::2]) keeps the exported ONNX graph to
    plain Slice ops for any batch size. H and W must be even.
    """

    def part(i: int, j: int) -> jax.Array:
        return jax.lax.slice(x, (0, i, j, 0), x.shape, (1, 2, 2, 1))

    return jnp.maximum(jnp.maximum(part(0, 0), part(0, 1)), jnp.maximum(part(1, 0), part(1, 1)))


def _conv_valid(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return jax.lax.conv_general_dilated(
        x, kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def _dot(a: jax.Array, b: jax.Array) -> jax.Array:
    """a @ b summed in float32 whatever the operands' dtype (float32 operands: plain a @ b)."""
    return jnp.matmul(a, b, preferred_element_type=jnp.float32)


# The four positions (row, column) of a 2x2 pooling window, in row-major order: a tie goes to
# the first of them, as in TF/Keras and PyTorch.
WINDOW = ((0, 0), (0, 1), (1, 0), (1, 1))


def _offsets(kh: int, kw: int) -> list[tuple[int, int]]:
    """Every (window position + kernel tap) offset, row-major: (kh + 1) * (kw + 1) of them."""
    return [(sy, sx) for sy in range(kh + 1) for sx in range(kw + 1)]


def strided_taps(x: jax.Array, kh: int, kw: int) -> jax.Array:
    """(S, B, Ho, Wo, Cin): x every second pixel from each offset (sy, sx) of _offsets.

    The input pixel under conv output (2i + qi, 2j + qj), tap (di, dj), is
    taps[offset (qi + di, qj + dj)][b, i, j]: the 16 strided views of a 3x3 conv under 2x2
    pooling hold every input a pooled output reads, with no gather (linear in x).
    """
    b, h, w, cin = x.shape
    ho, wo = (h - kh + 1) // 2, (w - kw + 1) // 2
    views = [
        jax.lax.slice(x, (0, sy, sx, 0), (b, sy + 2 * ho - 1, sx + 2 * wo - 1, cin), (1, 2, 2, 1))
        for sy, sx in _offsets(kh, kw)
    ]
    return jnp.stack(views)


def window_kernel(kernel: jax.Array) -> jax.Array:
    """((kh+1) * (kw+1) * Cin, 4 * C): the kernel placed at each pooling-window position, so that
    taps (N, S * Cin) @ window_kernel is the conv at the 4 positions of every window (N, 4 * C)."""
    kh, kw, cin, c = kernel.shape
    placed = jnp.zeros((kh + 1, kw + 1, cin, len(WINDOW), c), kernel.dtype)
    for q, (qi, qj) in enumerate(WINDOW):
        placed = placed.at[qi : qi + kh, qj : qj + kw, :, q, :].set(kernel)
    return placed.reshape((kh + 1) * (kw + 1) * cin, len(WINDOW) * c)


def _window_convs(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """(4, B, Ho, Wo, C) float32: the conv at each pooling-window position, as sums of per-tap
    products of the strided views (elementwise work XLA fuses into one pass: no gathered
    patches, no thin GEMM). Products of bfloat16 values are exact in float32."""
    kh, kw, cin, c = kernel.shape
    taps = strided_taps(x.astype(jnp.float32), kh, kw)  # (S, B, Ho, Wo, Cin)
    k = kernel.astype(jnp.float32)
    index = {offset: s for s, offset in enumerate(_offsets(kh, kw))}
    windows = []
    for qi, qj in WINDOW:
        terms = [
            taps[index[(qi + di, qj + dj)], ..., ci : ci + 1] * k[di, dj, ci].reshape(1, 1, 1, c)
            for di in range(kh)
            for dj in range(kw)
            for ci in range(cin)
        ]
        windows.append(sum(terms[1:], terms[0]))
    return jnp.stack(windows)


def _max_and_first(windows: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Max over the window axis and where it is (the first of ties; NaN wins), as one variadic
    reduction: XLA computes the window convs once for both (a max then a chain of compares
    recomputed them, 2.4x slower on the 2-core Xeon)."""
    position = jax.lax.broadcasted_iota(jnp.int32, windows.shape, 0)

    def pick(a, b):
        (av, ai), (bv, bi) = a, b
        take = (bv > av) | (bv != bv) | ((bv == av) & (bi < ai))
        return jnp.where(take, bv, av), jnp.where(take, bi, ai)

    init = (jnp.array(-jnp.inf, windows.dtype), jnp.array(len(WINDOW), jnp.int32))
    return jax.lax.reduce((windows, position), init, pick, (0,))


@jax.custom_vjp
def conv_max_pool(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """max_pool_2x2(VALID conv(x, kernel)), bias-free: (B, H, W, Cin) -> (B, Ho, Wo, C).

    Evaluated (inference, ONNX export) it is exactly that composition of standard ops. Under
    autodiff (training) it runs a hand-written forward and backward instead: XLA:CPU's own
    gradient (a filter-gradient convolution plus a scatter of the pooling gradient) is ~25x
    slower. The forward computes the conv at the 4 positions of each pooling window as sums of
    strided views of x times the kernel's taps, in float32, and keeps only the max and its
    position (int8): the full conv output is never stored. The backward routes the gradient to
    that position and takes the kernel gradient as one GEMM of the strided views with it
    (float32 sums). A tie inside a pooling window sends the gradient to the first maximum in
    row-major order, as TF/Keras and PyTorch do.

    Any float dtype: bfloat16 x and kernel (mixed precision) are multiplied exactly and summed
    in float32, the pooling compares the float32 sums, and the output and gradients come back
    in bfloat16. In float32 the sums are float32 too.
    """
    return max_pool_2x2(_conv_valid(x, kernel))


def _conv_max_pool_fwd(x, kernel):
    out, first = _max_and_first(_window_convs(x, kernel))
    return out.astype(x.dtype), (x, kernel, first.astype(jnp.int8))


def _conv_max_pool_bwd(res, g):
    x, kernel, first = res
    kh, kw, cin, c = kernel.shape
    b, ho, wo, _ = g.shape
    n, s = b * ho * wo, (kh + 1) * (kw + 1) * cin
    # The pooling gradient: g at the position that held each window's max, 0 at the others.
    position = jax.lax.broadcasted_iota(jnp.int8, (1, 1, 1, len(WINDOW), 1), 3)
    gq = jnp.where(first[..., None, :] == position, g[..., None, :], 0)
    gq = gq.astype(x.dtype).reshape(n, len(WINDOW) * c)  # (N, 4C)
    taps, taps_vjp = jax.vjp(lambda v: strided_taps(v, kh, kw), x)  # (S, B, Ho, Wo, Cin)
    per_offset = jnp.moveaxis(taps, -1, 1).reshape(s, n)  # (S * Cin, N)
    r = _dot(per_offset, gq).reshape(kh + 1, kw + 1, cin, len(WINDOW), c)
    dkernel = sum(r[qi : qi + kh, qj : qj + kw, :, q] for q, (qi, qj) in enumerate(WINDOW))
    # Input gradient: each strided view's share, sent back through the views (XLA drops it
    # when, as in training, nothing asks for it).
    dtaps = _dot(gq, window_kernel(kernel).T.astype(x.dtype))  # (N, S * Cin)
    dtaps = jnp.moveaxis(dtaps.reshape(b, ho, wo, s // cin, cin), 3, 0)  # (S, B, Ho, Wo, Cin)
    (dx,) = taps_vjp(dtaps.astype(taps.dtype))
    return dx, dkernel.astype(kernel.dtype)


conv_max_pool.defvjp(_conv_max_pool_fwd, _conv_max_pool_bwd)


# The previous training kernel, kept because the original recipe trains with it: its GEMMs sum
# in another order than the strided form's, so its runs stay those of before bit for bit (the
# seed comparison's published figures). ~1.5x the strided form's time on the 2-core Xeon.
@functools.lru_cache(maxsize=16)
def _pool_major_patches(shape: tuple[int, ...], kh: int, kw: int) -> np.ndarray:
    """Indices into x.reshape(-1) of the conv input patches, grouped by pooling-window position.

    For x of shape (B, H, W, Cin): (4 * B * Ho * Wo, kh * kw * Cin), row (q, b, i, j) holding
    the patch under conv output (2i + qi, 2j + qj) for window position q = (qi, qj) in row-major
    order, columns in the HWIO kernel's (di, dj, ci) order.
    """
    b, h, w, cin = shape
    ho, wo = (h - kh + 1) // 2, (w - kw + 1) // 2
    q = np.array([(0, 0), (0, 1), (1, 0), (1, 1)]).reshape(4, 1, 1, 1, 1, 2)
    taps = np.array([(di, dj, ci) for di in range(kh) for dj in range(kw) for ci in range(cin)])
    taps = taps.reshape(1, 1, 1, 1, -1, 3)
    bb = np.arange(b).reshape(1, b, 1, 1, 1)
    rows = 2 * np.arange(ho).reshape(1, 1, ho, 1, 1) + q[..., 0] + taps[..., 0]
    cols = 2 * np.arange(wo).reshape(1, 1, 1, wo, 1) + q[..., 1] + taps[..., 1]
    index = ((bb * h + rows) * w + cols) * cin + taps[..., 2]
    return index.reshape(4 * b * ho * wo, kh * kw * cin).astype(np.int32)


@jax.custom_vjp
def conv_max_pool_gather(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """conv_max_pool's values, trained through gathered patches: the conv computed directly
    in pooling-window-major order as one GEMM of the gathered input patches
    (4*B*Ho*Wo, kh*kw*Cin) with the kernel, so pooling is a max of 4 contiguous blocks; the
    pooling gradient is one select and the kernel gradient one more GEMM. Ties and dtypes as
    conv_max_pool."""
    return max_pool_2x2(_conv_valid(x, kernel))


def _gather_fwd(x, kernel):
    b, h, w, _ = x.shape
    kh, kw, _, c = kernel.shape
    index = _pool_major_patches(x.shape, kh, kw)
    patches = x.reshape(-1)[index]  # (4N, K)
    y = _dot(patches, kernel.reshape(-1, c)).reshape(4, -1, c)  # (4, N, C) f32, N = B*Ho*Wo
    out = jnp.maximum(jnp.maximum(y[0], y[1]), jnp.maximum(y[2], y[3]))  # (N, C)
    ho, wo = (h - kh + 1) // 2, (w - kw + 1) // 2
    return out.reshape(b, ho, wo, c).astype(x.dtype), (x, kernel, y, out)


def _gather_bwd(res, g):
    x, kernel, y, out = res
    kh, kw, _, c = kernel.shape
    g = g.reshape(-1, c)
    # The window position that held the max (first of ties), then the pooling gradient as one
    # select over the (4, N, C) conv output: no scatter, no concatenation.
    first = jnp.where(y[0] == out, 0, jnp.where(y[1] == out, 1, jnp.where(y[2] == out, 2, 3)))
    position = jax.lax.broadcasted_iota(jnp.int32, (4, 1, 1), 0)
    gy = jnp.where(first[None] == position, g[None], 0.0).reshape(-1, c)  # (4N, C)
    index = _pool_major_patches(x.shape, kh, kw)
    dkernel = _dot(x.reshape(-1)[index.T], gy).reshape(kernel.shape)  # (K, 4N) @ (4N, C)
    # Input gradient: the patches' gradient scattered back (XLA drops it when, as in training,
    # nothing asks for it).
    dpatches = _dot(gy, kernel.reshape(-1, c).T)  # (4N, K)
    dx = jnp.zeros(x.size, jnp.float32).at[index].add(dpatches).reshape(x.shape)
    return dx.astype(x.dtype), dkernel.astype(kernel.dtype)


conv_max_pool_gather.defvjp(_gather_fwd, _gather_bwd)


def conv_max_pool_reference(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """max_pool_2x2(VALID conv(x, kernel)) differentiated by JAX itself (no custom gradient)."""
    return max_pool_2x2(_conv_valid(x, kernel))


# The training kernels a model can be built with (Recipe.conv_pool): every one evaluates to the
# same textbook composition; they differ in how the training gradient is computed.
KERNELS = {
    "strided": conv_max_pool,
    "gather": conv_max_pool_gather,
    "reference": conv_max_pool_reference,
}

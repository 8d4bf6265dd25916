"""A small norm-free residual net (issue 32, a candidate third model family; screening only).

Stem: conv 3x3 VALID + max-pool 2x2 (the CNN's fused `conv_max_pool`), 28 -> 13. Optionally a
SAME 3x3 conv at 28x28 before it ("pre"). Then residual blocks at 13x13, a strided block to 7x7,
more blocks at 7x7, ReLU, global average pooling (or a flatten of the 7x7 map) and a dense layer
to 10 logits. No normalisation: every residual branch ends in a learnable scalar initialised to
0 (SkipInit), so the net starts as a shallow one and holds no state beyond nnx.Param.

Convolutions go through `conv`: evaluated (inference, ONNX export) it is lax.conv (one ONNX Conv);
under autodiff (training) its forward and backward are an im2col of strided slices plus GEMMs,
because XLA:CPU runs real convolutions ~25x slower inside the training step's device loop
(/work/shared/MODEL-NOTES.md, jax-ml/jax#12868); slices, pads and GEMMs are fine there.

The architecture is read from a spec string, by default `SPEC`; the environment variable
FLAXDIGITS_RESNET overrides it for screening (benchmarks.recipe_variants --model resnet).
Spec: comma-separated `key=value`: c1 (13x13 width), c2 (7x7 width), b1 (blocks at 13x13),
b2 (blocks at 7x7 after the strided one), pre (0/1: a SAME conv at 28x28 before the stem),
head (gap: global average pooling; flat: flatten 7x7xc2 -> 10; flatN: flatten -> dense N
ReLU -> 10, dropout on the flattened features).
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
from flax import nnx

from flaxdigits.models.conv_pool import conv_max_pool
from flaxdigits.models.layers import KERNEL_INIT, Dropout, drop

SPEC = "c1=16,c2=32,b1=1,b2=0,pre=0,head=flat100"  # the best screened (2026-12-05 doc)


def parse_spec(spec: str) -> dict[str, object]:
    out: dict[str, object] = dict(c1=16, c2=32, b1=1, b2=1, pre=0, head="gap")
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, _, value = part.partition("=")
        if key not in out:
            raise ValueError(f"unknown resnet spec key {key!r}")
        out[key] = value if key == "head" else int(value)
    return out


def _lax_conv(x, kernel, stride: int, pad: int):
    return jax.lax.conv_general_dilated(
        x,
        kernel,
        (stride, stride),
        ((pad, pad), (pad, pad)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )


def im2col_conv(x, kernel, stride: int, pad: int):
    """The same conv as im2col (kh*kw strided slices concatenated on channels) plus one GEMM."""
    kh, kw, cin, cout = kernel.shape
    if pad:
        x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    b, h, w, _ = x.shape
    ho, wo = (h - kh) // stride + 1, (w - kw) // stride + 1
    taps = [
        jax.lax.slice(
            x,
            (0, di, dj, 0),
            (b, di + (ho - 1) * stride + 1, dj + (wo - 1) * stride + 1, cin),
            (1, stride, stride, 1),
        )
        for di in range(kh)
        for dj in range(kw)
    ]
    patches = taps[0] if len(taps) == 1 else jnp.concatenate(taps, axis=-1)
    y = jnp.matmul(
        patches.reshape(-1, kh * kw * cin),
        kernel.reshape(-1, cout),
        preferred_element_type=jnp.float32,
    )
    return y.reshape(b, ho, wo, cout).astype(x.dtype)


def taps_conv(x, kernel, stride: int, pad: int):
    """The same conv as a sum over the kh*kw taps of (strided slice) @ kernel[tap]: no concat."""
    kh, kw, cin, cout = kernel.shape
    if pad:
        x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    b, h, w, _ = x.shape
    ho, wo = (h - kh) // stride + 1, (w - kw) // stride + 1
    y = None
    for di in range(kh):
        for dj in range(kw):
            tap = jax.lax.slice(
                x,
                (0, di, dj, 0),
                (b, di + (ho - 1) * stride + 1, dj + (wo - 1) * stride + 1, cin),
                (1, stride, stride, 1),
            )
            part = jnp.matmul(
                tap.reshape(-1, cin), kernel[di, dj], preferred_element_type=jnp.float32
            )
            y = part if y is None else y + part
    return y.reshape(b, ho, wo, cout).astype(x.dtype)


TRAIN_CONV = {"im2col": None, "taps": taps_conv}


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv(x, kernel, stride: int = 1, pad: int = 1):
    """lax.conv NHWC/HWIO with symmetric padding; trained through im2col_conv's gradient."""
    return _lax_conv(x, kernel, stride, pad)


def _conv_fwd(x, kernel, stride, pad):
    fn = TRAIN_CONV[os.environ.get("FLAXDIGITS_RESNET_CONV", "im2col")] or im2col_conv
    y, vjp = jax.vjp(functools.partial(fn, stride=stride, pad=pad), x, kernel)
    return y, vjp


def _conv_bwd(stride, pad, vjp, g):
    return vjp(g)


conv.defvjp(_conv_fwd, _conv_bwd)


def _kernel(rngs, kh, cin, cout):
    return nnx.Param(KERNEL_INIT(rngs.params(), (kh, kh, cin, cout), jnp.float32))


class ConvBias(nnx.Module):
    def __init__(self, kh: int, cin: int, cout: int, *, rngs: nnx.Rngs):
        self.kernel = _kernel(rngs, kh, cin, cout)
        self.bias = nnx.Param(jnp.zeros((cout,), jnp.float32))

    def __call__(self, x, stride: int = 1, pad: int = 1):
        return conv(x, self.kernel[...], stride, pad) + self.bias[...]


class Block(nnx.Module):
    """x -> shortcut(x) + alpha * conv(relu(conv(relu(x)))), alpha initialised to 0."""

    def __init__(self, cin: int, cout: int, stride: int, *, rngs: nnx.Rngs):
        self.conv1 = ConvBias(3, cin, cout, rngs=rngs)
        self.conv2 = ConvBias(3, cout, cout, rngs=rngs)
        self.proj = ConvBias(1, cin, cout, rngs=rngs) if (stride != 1 or cin != cout) else None
        self.alpha = nnx.Param(jnp.zeros((), jnp.float32))
        self.stride = stride

    def __call__(self, x):
        h = self.conv1(nnx.relu(x), self.stride, 1)
        h = self.conv2(nnx.relu(h), 1, 1)
        short = x if self.proj is None else self.proj(x, self.stride, 0)
        return short + self.alpha[...] * h


class ResNet(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs, spec: str | None = None):
        s = parse_spec(spec if spec is not None else os.environ.get("FLAXDIGITS_RESNET", SPEC))
        c1, c2 = int(s["c1"]), int(s["c2"])
        self.gap = s["head"] == "gap"  # static attributes must hash: no dict
        self.pre = ConvBias(3, 1, c1, rngs=rngs) if s["pre"] else None
        self.stem = _kernel(rngs, 3, c1 if s["pre"] else 1, c1)
        self.stem_bias = nnx.Param(jnp.zeros((c1,), jnp.float32))
        self.blocks1 = nnx.List([Block(c1, c1, 1, rngs=rngs) for _ in range(int(s["b1"]))])
        self.down = Block(c1, c2, 2, rngs=rngs)
        self.blocks2 = nnx.List([Block(c2, c2, 1, rngs=rngs) for _ in range(int(s["b2"]))])
        head = str(s["head"])
        if head not in ("gap", "flat") and not (head.startswith("flat") and head[4:].isdigit()):
            raise ValueError(f"resnet head must be gap, flat or flatN, got {head!r}")
        features = c2 if head == "gap" else 7 * 7 * c2
        hidden = int(head[4:]) if head.startswith("flat") and head != "flat" else 0
        self.hidden = (
            nnx.Linear(features, hidden, kernel_init=KERNEL_INIT, rngs=rngs) if hidden else None
        )
        self.out = nnx.Linear(hidden or features, 10, kernel_init=KERNEL_INIT, rngs=rngs)

    def __call__(self, x: jax.Array, dropout: Dropout | None = None) -> jax.Array:
        if self.pre is not None:
            x = nnx.relu(self.pre(x, 1, 1))  # (B, 28, 28, c1)
        x = conv_max_pool(x, self.stem[...]) + self.stem_bias[...]  # (B, 13, 13, c1)
        for block in self.blocks1:
            x = block(x)
        x = self.down(x)  # (B, 7, 7, c2)
        for block in self.blocks2:
            x = block(x)
        x = nnx.relu(x)
        if self.gap:
            # a sum and a scale, not jnp.mean: jax2onnx (0.x) writes ReduceMean with an axes
            # input at opset 13, where ReduceMean takes axes as an attribute (invalid ONNX);
            # ReduceSum takes an axes input from opset 13 on.
            x = jnp.sum(x, axis=(1, 2)) * (1.0 / (x.shape[1] * x.shape[2]))
        else:
            x = x.reshape(x.shape[0], -1)
        x = drop(x, dropout)
        if self.hidden is not None:
            x = nnx.relu(self.hidden(x))
        return self.out(x).astype(jnp.float32)

"""Winograd convolution F(m x m, r x r) in TensorFlow ops: fewer multiply-adds for stride-1 convs.

A stride-1 convolution reads overlapping (m + r - 1)^2 tiles of the input
and writes m x m tiles of the output. Winograd's minimal filtering algorithm
computes each output tile from the input tile and the r x r kernel with
(m + r - 1)^2 multiplications per channel pair instead of m^2 r^2:

    Y = A^T [ (G g G^T) * (B^T d B) ] A          (per tile; * is elementwise)

Summed over input channels, the elementwise product becomes (m + r - 1)^2
independent matrix products [tiles, c_in] @ [c_in, c_out] - one batched
matmul, which oneDNN runs near the machine's peak. F(4x4, 3x3) does 36/144 =
1/4 of a 3x3 conv's multiply-adds, F(3x3, 4x4) 36/144 of a 4x4 conv's.

TensorFlow on CPU convolves directly (oneDNN has Winograd kernels, TensorFlow
does not select them), so this module does it in ops TensorFlow runs well:
tiles cut by reshape + slice (no strided gathers), the transforms and the
kernel transform as small constant matmuls, the gradient by autodiff (every op
here has a cheap one). Measured on 2 cores (AVX-512), forward + backward,
float32: a 3x3 256->256 conv on 64x64 89 -> 43 ms, on 32x32 23 -> 13 ms; the
PatchGAN's 4x4 256->512 conv on 34x34 62 -> 35 ms.

Numerics: the transforms mix values with coefficients up to 5 (F(4x4, 3x3),
points 0, +-1, +-2), so float32 results differ from a direct conv by ~1e-5
relative (two direct implementations differ by ~1e-6). Under float16 or
bfloat16 that would be far too coarse, so `WinogradConv2D` falls back to the
direct conv whenever it does not compute in float32.

Not used for the 4x4 stride-2 and transposed convs: read as 2x2 convs (over
space-to-depth blocks, or per output phase) F(4x4, 2x2) saves too little
against the transforms - measured no faster, often slower.
"""

from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf

# Interpolation points by how many are needed (m + r - 2; the last point is infinity).
_POINTS = (0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5)
# Output tile per kernel size: the largest whose float32 error stays ~1e-5 (against float64: F(4x4, 3x3)
# 1.3e-5, F(3x3, 4x4) 1.0e-5, a direct conv 2.6e-6). F(3x3, 4x4) ran the PatchGAN's conv 1.3x faster than
# F(2x2, 4x4).
TILE_FOR_KERNEL = {3: 4, 4: 3}
# Below these (output rows and columns, channels in and out) the kernel transform (c_in x c_out x
# (m + r - 1)^2 values) and the tile transforms outweigh the saved multiply-adds, or the matmuls are
# too thin to run well: such layers keep the direct conv. Measured here: 3x3 256->256 gains 2x on
# 64x64 and 1.7x on 32x32, breaks even at 32x32 with 128 channels and on 16x16, loses on 8x8.
MIN_SIDE, MIN_CHANNELS = 24, 128


@functools.lru_cache(maxsize=None)
def transforms(m: int, r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(A^T [m, a], G [a, r], B^T [a, a]) of the Toom-Cook algorithm F(m, r), a = m + r - 1.

    A^T and G follow from the points (Vandermonde rows; G scaled by the
    Lagrange denominators); B^T is the unique matrix that makes the 1D
    identity exact, solved for and checked here.
    """
    a = m + r - 1
    points = _POINTS[:a - 1]
    at, g = np.zeros((m, a)), np.zeros((a, r))
    for j, p in enumerate(points):
        at[:, j] = [p ** i for i in range(m)]
        g[j] = [p ** k / np.prod([p - q for q in points if q != p]) for k in range(r)]
    at[m - 1, a - 1] = g[a - 1, r - 1] = 1.0
    # y_i = sum_k g_k d_{i+k} for all d, g  <=>  sum_j AT[i,j] G[j,k] BT[j,l] = [l == i + k]
    rows = np.zeros((m * r * a, a * a))
    target = np.zeros(m * r * a)
    for n, (i, k, l) in enumerate((i, k, l) for i in range(m) for k in range(r) for l in range(a)):
        rows[n].reshape(a, a)[:, l] = at[i] * g[:, k]
        target[n] = float(l == i + k)
    bt = np.linalg.lstsq(rows, target, rcond=None)[0].reshape(a, a)
    bt[np.abs(bt) < 1e-9] = 0.0
    assert np.allclose(rows @ bt.ravel(), target, atol=1e-9), f"no exact Winograd F({m}, {r})"
    return at, g, bt


def _dims(t) -> list[int]:
    """Static shape with the one unknown (batch) dimension as -1, for reshape."""
    return [-1 if d is None else d for d in t.shape]


def _tiles(x, axis: int, m: int, a: int, count: int):
    """`count` windows of length a, stride m, along `axis`, stacked on a new leading axis: [a, ...]."""
    blocks = count + -(-(a - m) // m)
    extra = blocks * m - x.shape[axis]
    if extra > 0:
        x = tf.pad(x, [[0, extra] if i == axis else [0, 0] for i in range(x.shape.rank)])
    elif extra < 0:
        x = tf.slice(x, [0] * x.shape.rank, [blocks * m if i == axis else -1 for i in range(x.shape.rank)])
    dims = _dims(x)
    phases = tf.unstack(tf.reshape(x, dims[:axis] + [blocks, m] + dims[axis + 1:]), axis=axis + 1)
    size = [count if i == axis else -1 for i in range(x.shape.rank)]
    return tf.stack([tf.slice(phases[j % m], [j // m if i == axis else 0 for i in range(x.shape.rank)], size)
                     for j in range(a)])


def _mix(matrix: np.ndarray, t):
    """matrix [p, a] applied along t's leading axis (of length a)."""
    out = tf.matmul(tf.constant(matrix, t.dtype), tf.reshape(t, [t.shape[0], -1]))
    return tf.reshape(out, [matrix.shape[0]] + _dims(t)[1:])


def _interleave(t, axis: int):
    """[m, ...] -> the m phases interleaved into `axis` of the rest (which it multiplies by m)."""
    rank = t.shape.rank
    y = tf.transpose(t, list(range(1, axis + 2)) + [0] + list(range(axis + 2, rank)))
    dims = _dims(t)[1:]
    return tf.reshape(y, dims[:axis] + [t.shape[0] * dims[axis]] + dims[axis + 1:])


def conv2d_valid(x, kernel, m: int):
    """tf.nn.conv2d(x, kernel, 1, 'VALID') for NHWC x, computed as Winograd F(m x m, r x r).

    Any height and width: the last row/column of tiles is zero-padded and the
    output cropped. The batch dimension may be unknown; the others must not.
    """
    r, _, c_in, c_out = kernel.shape
    at, g, bt = transforms(m, r)
    a = m + r - 1
    height, width = x.shape[1] - r + 1, x.shape[2] - r + 1
    rows, cols = -(-height // m), -(-width // m)
    v = _mix(bt, _tiles(x, 1, m, a, rows))               # [a_h, n, rows, W, c_in]
    v = _mix(bt, _tiles(v, 3, m, a, cols))               # [a_w, a_h, n, rows, cols, c_in]
    # Kernel transform G g G^T as one matmul, in v's (a_w, a_h) order.
    gg = np.einsum("qj,pi->qpij", g, g).reshape(a * a, r * r)
    u = tf.matmul(tf.constant(gg, kernel.dtype), tf.reshape(kernel, [r * r, c_in * c_out]))
    prod = tf.matmul(tf.reshape(v, [a * a, -1, c_in]), tf.reshape(u, [a * a, c_in, c_out]))
    y = tf.reshape(prod, [a, a, -1, rows, cols, c_out])
    y = _interleave(_mix(at, y), 3)                      # [a_h, n, rows, m * cols, c_out]
    y = _interleave(_mix(at, y), 1)                      # [n, m * rows, m * cols, c_out]
    if m * rows != height or m * cols != width:
        y = y[:, :height, :width]
    return y


def worthwhile(height: int | None, width: int | None, c_in: int, c_out: int, r: int) -> bool:
    """Whether a stride-1 r x r conv with this output size and these channels gains from Winograd."""
    if height is None or width is None or r not in TILE_FOR_KERNEL:
        return False
    return min(height, width) >= MIN_SIDE and min(c_in, c_out) >= MIN_CHANNELS


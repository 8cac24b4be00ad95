"""The one conversion between stored pixels and what the networks see: uint8 [0, 255] <-> float [-1, 1].

TensorFlow ops, so the same two functions serve NumPy callers (`.numpy()` on the result), the
`tf.data` pipeline and the exported SavedModel's graph. Rounding is half-to-even, as NumPy's.
"""

from __future__ import annotations


def to_unit(images):
    """uint8 (or any numeric) images in [0, 255] -> float32 in [-1, 1]."""
    import tensorflow as tf
    return tf.cast(images, tf.float32) / 127.5 - 1.0


def to_uint8(images):
    """Images in [-1, 1] (a generator's tanh output) -> uint8, rounded and clipped."""
    import tensorflow as tf
    return tf.cast(tf.clip_by_value(tf.round((tf.cast(images, tf.float32) + 1.0) * 127.5), 0, 255), tf.uint8)

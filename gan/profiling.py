"""What `jobs/bench.py` measures against: analytic FLOPs, the attainable rate, a textbook step.

- `model_flops`: multiply-adds x 2 of every Conv2D / Conv2DTranspose / Dense
  for one image (the rest — BN, activations, adds — is < 1 % at these sizes);
  the function's count as a direct convolution computes it, so the
  ResNet's subpixel up blocks (16/36 of theirs) count as UpSampling2D +
  Conv2D and the Winograd convs (1/4) as Conv2D: the achieved
  rate is the one the textbook would need to match, and may pass the roof.
- `train_step_flops`: G forward + two D forwards, times 3 for forward +
  backward (the usual 1:2 forward:backward estimate).
- `memory_estimate`: weights + gradients + Adam slots, and the activations a
  step keeps for the backward pass per image (every layer output of G and of
  the two D passes, float32) — what sizes the batch on a GPU.
- `attainable_gflops`: the best of a large float32 matmul and a large 3x3
  convolution measured on this machine, the roof a step can approach.
- `op_time_breakdown`: trace a few steps with `tf.profiler` (a TensorBoard
  profile) and sum the host time per TensorFlow op type — where a step goes.
- `reference_step`: the plain TensorFlow-tutorial pix2pix step — one
  `tf.function`, two GradientTapes, Keras BCE and Adam, no strategy, no XLA —
  on models built with Keras's own layers (BatchNormalization, UpSampling2D +
  Conv2D, Conv2D for every conv): the baseline the project's step is
  compared with.
- `textbook_process` (`python -m gan.profiling GEN SIZE BATCH STEPS WARMUP`):
  that step timed alone in a fresh process, as a user's plain script runs it;
  `jobs/bench.py` starts it with and without the caching allocator, because
  a reference timed inside the bench's own process shares its allocator
  state and hides the difference.
"""

from __future__ import annotations

import time

import numpy as np


def model_flops(model) -> int:
    """FLOPs of one forward pass for one image."""
    from keras import layers
    total = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, layers.Conv2DTranspose):
            _, h, w, c_in = layer.input.shape
            k = np.prod(layer.kernel_size)
            total += 2 * h * w * k * c_in * layer.filters
        elif isinstance(layer, layers.Conv2D):
            _, h, w, c_out = layer.output.shape
            k = np.prod(layer.kernel_size)
            total += 2 * h * w * k * layer.input.shape[-1] * c_out
        elif isinstance(layer, layers.Dense):
            total += 2 * layer.input.shape[-1] * layer.units
    return int(total)


def train_step_flops(generator, discriminator) -> int:
    return 3 * (model_flops(generator) + 2 * model_flops(discriminator))


def memory_estimate(generator, discriminator) -> dict[str, float]:
    """MB of weights + gradients + Adam's two slots (4 x float32 per parameter), and MB of activations
    per image in the batch (upper estimate: every layer's output, G once and D twice)."""
    def activations(model) -> int:
        total = 0
        for layer in model._flatten_layers(include_self=False, recursive=True):
            outputs = layer.output if isinstance(layer.output, (list, tuple)) else [layer.output]
            total += sum(int(np.prod(o.shape[1:])) for o in outputs)
        return total
    params = generator.count_params() + discriminator.count_params()
    return {"state_mb": 16 * params / 1e6,
            "activations_mb_per_image": 4 * (activations(generator) + 2 * activations(discriminator)) / 1e6}


def _best_rate(fn, flops: float, repeats: int = 5) -> float:
    fn()  # warm up / trace
    best = min(_timed(fn) for _ in range(repeats))
    return flops / best / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def attainable_gflops() -> dict[str, float]:
    import tensorflow as tf
    n = 2048
    a = tf.random.normal([n, n])
    matmul = tf.function(lambda: tf.reduce_sum(tf.matmul(a, a)))
    x = tf.random.normal([1, 64, 64, 256])
    kernel = tf.random.normal([3, 3, 256, 256])
    conv = tf.function(lambda: tf.reduce_sum(tf.nn.conv2d(x, kernel, 1, "SAME")))
    rates = {"matmul_gflops": _best_rate(lambda: float(matmul()), 2 * n ** 3),
             "conv_gflops": _best_rate(lambda: float(conv()), 2 * 64 * 64 * 9 * 256 * 256)}
    rates["attainable_gflops"] = max(rates.values())
    return rates


def op_time_breakdown(step_fn, steps: int, logdir: str, top: int = 12) -> list[tuple[str, float]]:
    """[(op type, ms per step)] for the `top` op types by time over `steps` traced calls of `step_fn`
    (summed over TensorFlow's executor threads, so it can exceed the wall time); the raw trace stays
    in `logdir` for TensorBoard's profile plugin."""
    import collections
    from pathlib import Path

    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    tf.profiler.experimental.start(logdir)
    for _ in range(steps):
        step_fn()
    tf.profiler.experimental.stop()
    space = xplane_pb2.XSpace()
    space.ParseFromString(sorted(Path(logdir).rglob("*.xplane.pb"))[-1].read_bytes())
    per_op: collections.Counter = collections.Counter()
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU") and not plane.name.startswith("/device:GPU"):
            continue
        for line in plane.lines:
            if "Compute" not in line.name and "Stream" not in line.name:  # op executions only
                continue
            for event in line.events:
                op_type = plane.event_metadata[event.metadata_id].name.split(":")[-1]
                per_op[op_type] += event.duration_ps / 1e9 / steps
    return [(op, ms) for op, ms in per_op.most_common() if op != "Process"][:top]


def reference_step(generator, discriminator, l1_weight: float = 100.0):
    """The textbook step (TensorFlow pix2pix tutorial): returns `step(inputs, targets) -> gen_total`."""
    import keras
    import tensorflow as tf
    bce = keras.losses.BinaryCrossentropy(from_logits=True)
    opt_g = keras.optimizers.Adam(2e-4, beta_1=0.5)
    opt_d = keras.optimizers.Adam(2e-4, beta_1=0.5)

    @tf.function
    def step(inputs, targets):
        with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
            fake = generator(inputs, training=True)
            real_logits = discriminator([inputs, targets], training=True)
            fake_logits = discriminator([inputs, fake], training=True)
            gan = bce(tf.ones_like(fake_logits), fake_logits)
            gen_total = gan + l1_weight * tf.reduce_mean(tf.abs(targets - fake))
            disc = bce(tf.ones_like(real_logits), real_logits) + bce(tf.zeros_like(fake_logits), fake_logits)
        opt_g.apply_gradients(zip(g_tape.gradient(gen_total, generator.trainable_variables),
                                  generator.trainable_variables))
        opt_d.apply_gradients(zip(d_tape.gradient(disc, discriminator.trainable_variables),
                                  discriminator.trainable_variables))
        return gen_total

    return step


def textbook_process(gen: str, size: int, batch: int, steps: int, warmup: int, preset: str = "paper") -> dict:
    """The textbook step as a plain script would run it, in this (fresh) process: ms per step and kernel
    (system) CPU ms per step after `warmup` steps, and the allocator the process runs on."""
    import resource

    import tensorflow as tf

    from gan import inference
    from gan.config import make_config
    from gan.fastpath import loaded_allocator
    cfg = make_config(preset, {"model.generator": gen, "data.image_size": size, "model.batchnorm": "keras",
                                "model.upsample": "keras", "model.conv": "keras"})
    step = reference_step(inference.build_generator(cfg), inference.build_discriminator(cfg), cfg.optim.l1_weight)
    rng = np.random.default_rng(0)
    x, y = (tf.constant(rng.uniform(-1, 1, (batch, size, size, 3)).astype("float32")) for _ in range(2))
    for _ in range(warmup):
        float(step(x, y))
    kernel0 = resource.getrusage(resource.RUSAGE_SELF).ru_stime
    times = [_timed(lambda: float(step(x, y))) for _ in range(steps)]
    kernel = resource.getrusage(resource.RUSAGE_SELF).ru_stime - kernel0
    return {"step_ms": [1000 * t for t in times], "system_ms_per_step": 1000 * kernel / steps,
            "allocator": loaded_allocator() or "system"}


if __name__ == "__main__":  # python -m gan.profiling GEN SIZE BATCH STEPS WARMUP [PRESET] -> one JSON line
    import json
    import sys
    gen_, size_, batch_, steps_, warmup_, *rest = sys.argv[1:]
    print(json.dumps(textbook_process(gen_, int(size_), int(batch_), int(steps_), int(warmup_), *rest)))

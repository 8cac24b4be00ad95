"""Adam as the study uses it (Keras's Adam: same slots, same formula), with a one-pass update kernel.

Keras 3's Adam updates each variable with about ten TensorFlow ops (subtract,
multiply, square, sqrt, divide, three assigns), each a full pass over the
variable with a temporary the size of it. For the U-Net's 57 M parameters
that is memory traffic, not arithmetic: about 100 ms of a 700 ms CPU step.
`FusedAdam` hands the same update to TensorFlow's `ResourceApplyAdam` kernel,
one pass per variable:

    lr_t = lr * sqrt(1 - beta2^t) / (1 - beta1^t)
    m += (g - m) * (1 - beta1);  v += (g^2 - v) * (1 - beta2)
    var -= lr_t * m / (sqrt(v) + epsilon)

which is Keras's `Adam.update_step` term for term, to float32 rounding (the
kernel forms 1 - beta2 from float32 beta2, Keras from the Python float; v
differs by ~1e-5 relative; tests/test_optim.py checks the two agree). It is
also the kernel TF 2 Keras's Adam used before Keras 3, which the TensorFlow
pix2pix tutorial was written for. It keeps Keras's variables (`iterations`, momentums,
velocities), so checkpoints move freely between `optim.adam` fused and keras.
"""

from __future__ import annotations

import keras

from gan.config import OptimConfig


class FusedAdam(keras.optimizers.Adam):
    """keras.optimizers.Adam whose dense update is one `ResourceApplyAdam` per variable."""

    def update_step(self, gradient, variable, learning_rate):
        import tensorflow as tf
        if self.amsgrad or isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        index = self._get_variable_index(variable)

        def scalar(value):
            return tf.cast(value, dtype)

        # `handle` of a mirrored slot inside the optimizer's per-device update is that device's copy.
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle, m=self._momentums[index].handle, v=self._velocities[index].handle,
            beta1_power=tf.pow(scalar(self.beta_1), step), beta2_power=tf.pow(scalar(self.beta_2), step),
            lr=scalar(learning_rate), beta1=scalar(self.beta_1), beta2=scalar(self.beta_2),
            epsilon=scalar(self.epsilon), grad=tf.cast(gradient, dtype), use_locking=False)


def make_adam(learning_rate: float, cfg: OptimConfig) -> keras.optimizers.Adam:
    """The Adam `optim.adam` names (validated by the config): 'fused' (one kernel per variable) or 'keras'."""
    return {"fused": FusedAdam, "keras": keras.optimizers.Adam}[cfg.adam](learning_rate, beta_1=cfg.beta1, beta_2=cfg.beta2)

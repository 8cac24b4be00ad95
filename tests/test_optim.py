"""FusedAdam: Keras's Adam, one kernel per variable — same updates, same variables."""

import numpy as np
import pytest

from gan.config import OptimConfig
from gan.errors import UserError
from gan.config import make_config
from gan.optim import FusedAdam, make_adam


def test_fused_adam_updates_as_keras_adam():
    import keras
    import tensorflow as tf
    rng = np.random.default_rng(0)
    start = [rng.normal(size=s).astype("float32") for s in ((3, 3, 4, 5), (5,), (7,))]
    fused_vars, keras_vars = ([tf.Variable(v) for v in start] for _ in range(2))
    fused, reference = FusedAdam(2e-4, beta_1=0.5), keras.optimizers.Adam(2e-4, beta_1=0.5)
    for _ in range(5):
        grads = [tf.constant(rng.normal(size=v.shape).astype("float32")) for v in start]
        fused.apply_gradients(zip(grads, fused_vars))
        reference.apply_gradients(zip(grads, keras_vars))
    for a, b, v0 in zip(fused_vars, keras_vars, start):
        assert not np.allclose(a.numpy(), v0)
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-8)
    # Same slots under the same names: checkpoints move between the two kernels.
    assert [v.name for v in fused.variables] == [v.name for v in reference.variables]
    for a, b in zip(fused.variables, reference.variables):
        # The kernel takes 1 - beta2 in float32 (1 - 0.999f), Keras in float64: v differs by ~1e-5.
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-12)


def test_adam_kernel_is_chosen_by_config():
    import keras
    assert type(make_adam(1e-3, OptimConfig())) is FusedAdam
    assert type(make_adam(1e-3, OptimConfig(adam="keras"))) is keras.optimizers.Adam
    with pytest.raises(UserError, match="--optim.adam: unknown value 'sgd'"):
        make_config("tiny", {"optim.adam": "sgd"})  # the config's check; make_adam trusts it

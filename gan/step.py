"""The pix2pix training step: the two nets and their optimizers, the losses, the loss scale, and one
replicated update of both nets (or N of them in one call).

Loss (pix2pix): G minimises BCE(D(x, G(x)), 1) + l1_weight * |y - G(x)|,
D minimises BCE(D(x, y), 1) + BCE(D(x, G(x)), 0); both reduced per example,
then averaged over the *global* batch (`tf.nn.compute_average_loss`), so the
gradients Keras sums over replicas are those of one device with the whole batch.
"""

from __future__ import annotations

from gan.config import Config
from gan.devices import resolve_precision

LOSS_NAMES = ("gen_total", "gen_gan", "gen_l1", "disc")



def build_models(cfg: Config):
    """Generator, discriminator and their Adam optimizers (call inside `strategy.scope()`).

    Under mixed precision the layers compute in float16/bfloat16 and keep float32 variables.
    """
    import keras

    from gan import inference
    from gan.optim import make_adam
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(resolve_precision(cfg.train.precision))
    try:
        generator = inference.build_generator(cfg)
        discriminator = inference.build_discriminator(cfg)
    finally:  # the policy is process-global: leave it as found
        keras.mixed_precision.set_global_policy(previous)
    opt_g, opt_d = make_adam(cfg.optim.lr_g, cfg.optim), make_adam(cfg.optim.lr_d, cfg.optim)
    opt_g.build(generator.trainable_variables)  # slots exist before a checkpoint is restored
    opt_d.build(discriminator.trainable_variables)
    return generator, discriminator, opt_g, opt_d


class DynamicLossScale:
    """Dynamic loss scaling for mixed_float16, written for MirroredStrategy's replica context.

    Keras 3's LossScaleOptimizer fails inside `strategy.run` (its merge-call
    path finds no gradients; TF 2.21), so the step scales itself: the loss is
    multiplied by `scale` before the gradient and the gradients divided after.
    A replica whose gradients hold inf/NaN contributes zeros to that step's
    summed gradient; the first replica's verdict halves the scale, and after
    `growth_steps` finite steps the scale doubles (the TensorFlow guide's
    policy). No extra collective: an agreement all-reduce between the
    BatchNorm and gradient all-reduces was misordered across replicas on CPU.
    A zeroed step still decays Adam's moments once.
    Its two variables are checkpointed with the run (`train_step.checkpoint_state`).
    """

    def __init__(self, initial: float = 2.0 ** 15, growth_steps: int = 2000):
        import tensorflow as tf
        first = dict(trainable=False, aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        self.scale = tf.Variable(initial, dtype=tf.float32, **first)
        self.good_steps = tf.Variable(0, dtype=tf.int64, **first)
        self.growth_steps = growth_steps

    def unscale(self, scaled_grads: list) -> list:
        """Gradients of `loss * scale` (taken inside the tape) -> the gradients to apply; updates the scale."""
        import tensorflow as tf
        grads = [g / self.scale for g in scaled_grads]
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads])
        grow = tf.logical_and(finite, self.good_steps + 1 >= self.growth_steps)
        self.scale.assign(tf.where(finite, tf.where(grow, 2.0 * self.scale, self.scale), 0.5 * self.scale))
        self.good_steps.assign(tf.where(tf.logical_and(finite, tf.logical_not(grow)), self.good_steps + 1, 0))
        return [tf.where(finite, g, tf.zeros_like(g)) for g in grads]


def _bce(logits, label: float):
    """The PatchGAN's binary cross-entropy against a constant label, averaged over patches: per example."""
    import tensorflow as tf
    per_patch = tf.nn.sigmoid_cross_entropy_with_logits(tf.fill(tf.shape(logits), label), logits)
    return tf.reduce_mean(per_patch, axis=[1, 2, 3])


def _loss_scales(cfg: Config, strategy) -> dict:
    """The two nets' DynamicLossScales under mixed_float16 (float16 gradients underflow), else none."""
    if resolve_precision(cfg.train.precision) != "mixed_float16":
        return {}
    with strategy.scope():
        return {"loss_scale_g": DynamicLossScale(), "loss_scale_d": DynamicLossScale()}


def make_train_step(cfg: Config, strategy, generator, discriminator, opt_g, opt_d):
    """`train_step(iterator) -> {loss name: global-batch mean}`: one update of both nets.

    `train_step.checkpoint_state`: what the run's checkpoint must hold besides the nets and
    optimizers (the two `DynamicLossScale`s under mixed_float16, else nothing).
    """
    import tensorflow as tf
    batch = cfg.train.batch_size
    loss_scales = _loss_scales(cfg, strategy)
    bce = _bce

    def scaled(loss, name):
        return loss * loss_scales[name].scale if name in loss_scales else loss

    def losses_and_gradients(inputs, targets):
        with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
            fake = generator(inputs, training=True)
            real_logits = discriminator([inputs, targets], training=True)
            fake_logits = discriminator([inputs, fake], training=True)
            # Losses in float32 whatever the compute precision.
            fake, real_logits, fake_logits = (tf.cast(t, tf.float32) for t in (fake, real_logits, fake_logits))
            gen_gan = bce(fake_logits, 1.0)
            gen_l1 = tf.reduce_mean(tf.abs(targets - fake), axis=[1, 2, 3])
            gen_total = gen_gan + cfg.optim.l1_weight * gen_l1
            disc = bce(real_logits, 1.0) + bce(fake_logits, 0.0)
            losses = {name: tf.nn.compute_average_loss(value, global_batch_size=batch) for name, value in
                      zip(LOSS_NAMES, (gen_total, gen_gan, gen_l1, disc))}
            g_loss, d_loss = scaled(losses["gen_total"], "loss_scale_g"), scaled(losses["disc"], "loss_scale_d")
        g_grads = g_tape.gradient(g_loss, generator.trainable_variables)
        d_grads = d_tape.gradient(d_loss, discriminator.trainable_variables)
        return losses, g_grads, d_grads

    if cfg.train.jit_compile:
        # XLA compiles the forward and backward passes; the updates stay outside, because the
        # optimizer's cross-replica gradient sum is a merge point XLA cannot hold.
        losses_and_gradients = tf.function(losses_and_gradients, jit_compile=True)

    # Plain Python with no tensor-dependent control flow: autograph's source rewrite (about a second and a
    # half of every run's start on a CPU) would change nothing, so it is skipped.
    @tf.autograph.experimental.do_not_convert
    def replica_step(inputs, targets):
        losses, g_grads, d_grads = losses_and_gradients(inputs, targets)
        if loss_scales:
            g_grads = loss_scales["loss_scale_g"].unscale(g_grads)
            d_grads = loss_scales["loss_scale_d"].unscale(d_grads)
        # Keras sums the gradients over replicas before the update.
        opt_g.apply_gradients(zip(g_grads, generator.trainable_variables))
        opt_d.apply_gradients(zip(d_grads, discriminator.trainable_variables))
        return losses

    # No tf.function around replica_step: synchronized BatchNorm and the optimizer's
    # gradient all-reduce are merge points, legal only at this level.
    @tf.function(autograph=False)
    def train_step(iterator):
        per_replica = strategy.run(replica_step, args=next(iterator))
        return {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in per_replica.items()}

    @tf.function
    def train_steps(iterator, n):
        """n steps in one call (`train.steps_per_call`): the same updates, one host round trip."""
        losses = {k: tf.constant(0.0) for k in LOSS_NAMES}
        for _ in tf.range(n):
            per_replica = strategy.run(replica_step, args=next(iterator))
            losses = {k: strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica[k], axis=None) for k in LOSS_NAMES}
        return losses

    train_step.many = train_steps
    train_step.checkpoint_state = {name: tf.train.Checkpoint(scale=ls.scale, good_steps=ls.good_steps)
                                   for name, ls in loss_scales.items()}
    return train_step


def random_state_checkpoint(generator, discriminator):
    """Every random layer's state of both nets, for the run's checkpoint (`models.random_state`)."""
    import tensorflow as tf

    from gan.models import random_state
    return tf.train.Checkpoint(**{f"{net}_{i}": state for net, model in (("g", generator), ("d", discriminator))
                                  for i, state in enumerate(random_state(model))})

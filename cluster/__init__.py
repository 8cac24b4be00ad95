"""How work reaches machines: Ray Tune trainable and tuner, submitit executors."""

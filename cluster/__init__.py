"""How work reaches machines: the launch plan and run names (plan.py), the sweep protocols (sweep.py), the Ray Tune trainable and tuner (tune.py), submitit executors, search spaces."""

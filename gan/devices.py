"""Devices, the distribution strategy and the precision a run trains with.

What the scheduler gave this process (CUDA_VISIBLE_DEVICES from SLURM, Ray or the user), TensorFlow's view
of it (memory growth, a GPU given but invisible refused in one line), MirroredStrategy over several GPUs or
N logical CPU devices, and `train.precision` 'auto' resolved from the GPUs' compute capability.
"""

from __future__ import annotations

import os

from gan.errors import UserError


ALLOW_CPU_ENV = "PIX2PIX_ALLOW_CPU"  # =1: a job given GPUs that TensorFlow cannot see trains on the CPU anyway


def gpus_assigned() -> str:
    """The GPUs the scheduler gave this process (SLURM's --gres, Ray's assignment, a user's choice all land in
    CUDA_VISIBLE_DEVICES), or '' when it names none."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    return value if [v for v in value.split(",") if v.strip() not in ("", "-1")] else ""


def prepare_gpus() -> list:
    """TensorFlow's GPUs, each set to grow its memory as needed, before anything touches them: trials packed
    onto one device (Tune's fractional --gpus-per-trial) would otherwise find it taken by the first one, which
    reserves nearly all of its memory. A process given GPUs that TensorFlow cannot see (a CPU-only wheel, a
    broken driver) stops here in one line rather than training on the CPU for days, unless PIX2PIX_ALLOW_CPU=1."""
    import tensorflow as tf
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised by an earlier run in this process: it keeps its setting
            pass
    assigned = gpus_assigned()
    if assigned and not gpus and os.environ.get(ALLOW_CPU_ENV) != "1":
        raise UserError(f"this job was given GPU(s) (CUDA_VISIBLE_DEVICES={assigned}) but TensorFlow sees none: a "
                        "CPU-only TensorFlow or a broken driver (check nvidia-smi); install the GPU build with "
                        f"pip install -e '.[gpu]', or set {ALLOW_CPU_ENV}=1 to train on the CPU anyway")
    return gpus


def make_strategy(devices: str):
    """MirroredStrategy over several GPUs, the GPUs asked for, or N logical CPU devices; TensorFlow's
    default strategy on one device (the same code path, without MirroredStrategy's per-step buffers:
    half the page faults of a one-device MirroredStrategy step on CPU)."""
    import tensorflow as tf
    gpus = prepare_gpus()
    n = max(len(gpus), 1) if devices == "auto" else int(devices)
    if n == 1:
        return tf.distribute.get_strategy()  # places on the first GPU when there is one
    if gpus:
        if n > len(gpus):
            raise UserError(f"--train.devices: {n} devices asked, {len(gpus)} GPUs present")
        return tf.distribute.MirroredStrategy([f"/gpu:{i}" for i in range(n)])
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError:  # already initialised: fine if it already has n devices
        have = len(tf.config.list_logical_devices("CPU"))
        if have < n:
            raise UserError(f"--train.devices: {n} CPU devices asked, but TensorFlow already started "
                            f"with {have}; set it before anything else uses TensorFlow") from None
    return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(n)])


def resolve_precision(precision: str) -> str:
    """`train.precision` 'auto': mixed_float16 where every GPU has tensor cores (compute capability
    >= 7.0, the TensorFlow mixed-precision guide's threshold), float32 elsewhere, CPUs included."""
    if precision != "auto":
        return precision
    import tensorflow as tf
    gpus = tf.config.list_physical_devices("GPU")
    capabilities = [tf.config.experimental.get_device_details(g).get("compute_capability", (0, 0)) for g in gpus]
    return "mixed_float16" if gpus and min(capabilities) >= (7, 0) else "float32"


def device_name(strategy) -> str:
    """'cpu', 'gpu: <name>', or 'N x ...' for several replicas."""
    import tensorflow as tf
    gpus = tf.config.list_physical_devices("GPU")
    kind = "cpu"
    if gpus:
        kind = "gpu: " + tf.config.experimental.get_device_details(gpus[0]).get("device_name", "unknown")
    n = strategy.num_replicas_in_sync
    return kind if n == 1 else f"{n} x {kind}"

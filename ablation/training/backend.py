"""The one place that knows which Keras backend runs underneath (TensorFlow by default, JAX possible): device
names, and the precision and data-parallel settings a run trains under (trainer.mixed_precision, trainer.devices).
Everything else in the package talks to Keras 3 only."""
from __future__ import annotations

from contextlib import contextmanager, nullcontext

import keras

from ablation.core.errors import ConfigError

PRECISION_POLICIES = {False: "float32", True: "mixed_float16", "mixed_float16": "mixed_float16",
                      "mixed_bfloat16": "mixed_bfloat16"}


def device_description() -> str:
    """Where training runs, e.g. 'GPU:0 NVIDIA H100 80GB HBM3' or 'CPU', for the run's tags."""
    name = keras.backend.backend()
    if name == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            details = tf.config.experimental.get_device_details(gpus[0])
            return f"GPU:0 {details.get('device_name', '')}".strip() + (f" (+{len(gpus) - 1})" if len(gpus) > 1 else "")
        return "CPU"
    if name == "jax":
        import jax

        dev = jax.devices()[0]
        return "CPU" if dev.platform == "cpu" else f"{dev.platform.upper()}:0 {dev.device_kind}"
    return "CPU"


def visible_devices() -> list[str]:
    """The devices a run can spread over: the GPUs when there are any, else the CPU's (logical) devices."""
    name = keras.backend.backend()
    if name == "tensorflow":
        import tensorflow as tf

        return [d.name for d in tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")]
    if name == "jax":
        import jax

        gpus = [d for d in jax.devices() if d.platform != "cpu"]
        return [f"{d.platform}:{d.id}" for d in gpus or jax.devices("cpu")]
    return ["cpu:0"]


def check_settings(trainer) -> None:
    """Config-time checks of the accelerator settings (no device is touched)."""
    if trainer.get("mixed_precision") not in PRECISION_POLICIES:
        raise ConfigError(f"trainer.mixed_precision: expected false, true, mixed_float16 or mixed_bfloat16, got "
                          f"{trainer.get('mixed_precision')!r}")
    if trainer.get("jit_compile") not in ("auto", True, False):
        raise ConfigError(f"trainer.jit_compile: expected auto, true or false, got {trainer.get('jit_compile')!r}")
    devices = trainer.get("devices")
    if devices != "all" and (isinstance(devices, bool) or not isinstance(devices, int) or devices < 1):
        raise ConfigError(f"trainer.devices: expected a count >= 1 or all, got {devices!r}")


def devices_for(trainer) -> list[str]:
    """The devices trainer.devices asks for; more than are visible is a one-line error."""
    visible = visible_devices()
    wanted = len(visible) if trainer.devices == "all" else trainer.devices
    if wanted > len(visible):
        raise ConfigError(f"trainer.devices: {wanted} requested but {len(visible)} visible ({', '.join(visible)})")
    return visible[:wanted]


def fit_input(batches, start_epoch: int = 0):
    """(x, steps_per_epoch) for fit's training data. On TensorFlow, Keras would wrap a PyDataset in
    tf.data.Dataset.from_generator, one batch at a time through a Python generator (a few ms per batch, and a fit
    loop that waits for input); here tf.data itself asks for batch (epoch, i) by number, `workers` at a time
    (the augmentation's OpenCV calls release the GIL), and keeps batches prefetched across epoch boundaries. One
    endless dataset that fit takes steps_per_epoch batches from per epoch, starting at `start_epoch` (a resumed
    run). Other backends, and multiprocessing workers, get the PyDataset itself."""
    if keras.backend.backend() != "tensorflow" or batches.use_multiprocessing:
        return batches, None
    import tensorflow as tf

    steps = len(batches)
    # A batch is (x, y[, sample weights]); y may be a dict (a mixed batch: ablation/augment/mixing.py).
    sample = batches.batch_at(start_epoch, 0)
    flat = keras.tree.flatten(sample)

    def load(k):
        epoch, index = divmod(int(k), steps)
        return keras.tree.flatten(batches.batch_at(epoch, index))

    def fetch(k):
        arrays = tf.numpy_function(load, [k], Tout=[tf.as_dtype(a.dtype) for a in flat], stateful=False)
        for array, like in zip(arrays, flat):
            array.set_shape((None, *like.shape[1:]))
        return keras.tree.pack_sequence_as(sample, arrays)

    numbers = tf.data.Dataset.range(start_epoch * steps, 2**62)
    data = numbers.map(fetch, num_parallel_calls=batches.workers, deterministic=True).prefetch(tf.data.AUTOTUNE)
    return data, steps


def batch_multiple(replicas: int) -> int:
    """What every batch's length must be a multiple of: JAX shards a batch evenly across the devices (Keras
    pads nothing), TensorFlow's MirroredStrategy splits uneven batches itself."""
    return replicas if keras.backend.backend() == "jax" else 1


@contextmanager
def training_scope(trainer):
    """Build, compile and fit inside this: the precision policy, and with more than one device a data-parallel
    distribution (tf.distribute.MirroredStrategy on TensorFlow, keras.distribution.DataParallel on JAX) that
    splits every global batch of trainer.batch_size across the devices. Yields the device count; the previous
    global policy and distribution are restored afterwards, so runs in one process do not leak settings."""
    devices = devices_for(trainer) if trainer.devices != 1 else visible_devices()[:1]
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(PRECISION_POLICIES[trainer.mixed_precision])
    try:
        with _distribution(devices):
            yield len(devices)
    finally:
        keras.config.set_dtype_policy(previous_policy)


def _distribution(devices: list[str]):
    if len(devices) == 1:
        return nullcontext()
    name = keras.backend.backend()
    if name == "tensorflow":
        import tensorflow as tf

        return tf.distribute.MirroredStrategy(devices).scope()
    if name == "jax":
        return _jax_data_parallel(devices)
    raise ConfigError(f"trainer.devices: data-parallel training is not available on the {name} backend")


@contextmanager
def _jax_data_parallel(devices: list[str]):
    previous = keras.distribution.distribution()
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    try:
        yield
    finally:
        keras.distribution.set_distribution(previous)

"""The one place that knows which Keras backend runs underneath (TensorFlow by default, JAX possible)."""
import keras


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

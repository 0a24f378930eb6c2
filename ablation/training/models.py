"""Model factories: build_<name>(input_shape, num_classes, **hp) -> keras.Model, on the Keras 3 API only.

A factory's backbone takes float inputs in [0, 1] and ends in the head that the class count asks for: one
sigmoid unit for two classes, a softmax otherwise. build() puts it behind the uint8 input the batches deliver:
images (uint8) -> rescale to [0, 1] -> device-side augmentation, if any -> input normalisation
(dataset.normalize, ablation/training/normalize.py), if any -> backbone.
"""
from __future__ import annotations

import inspect
import os
from pathlib import Path

import keras
from keras import layers
from omegaconf import DictConfig, OmegaConf

from ablation.core.errors import ConfigError


def _head_layer(num_classes: int, name: str = "head") -> layers.Dense:
    """The classifier head; float32 even under mixed precision (trainer.mixed_precision), so the softmax and the
    loss are computed at full precision."""
    if num_classes == 2:
        return layers.Dense(1, activation="sigmoid", dtype="float32", name=name)
    return layers.Dense(num_classes, activation="softmax", dtype="float32", name=name)


def _head(x, num_classes: int):
    return _head_layer(num_classes)(x)


def _image_head(x, channels: int):
    """The image-to-image head (tasks reconstruct, inpaint): one sigmoid value per pixel and channel, in [0, 1]
    like the rescaled input, the targets and the PNGs ablation.cli.predict writes; float32 as the classifier head."""
    return layers.Conv2D(channels, 3, padding="same", activation="sigmoid", dtype="float32", name="head")(x)


def loss_for(num_classes: int) -> str:
    return "binary_crossentropy" if num_classes == 2 else "sparse_categorical_crossentropy"


def build_small_cnn(input_shape, num_classes, filters=(16, 32, 64), dense=128, dropout=0.0) -> keras.Model:
    inputs = keras.Input(shape=input_shape)
    x = inputs
    for f in filters:
        x = layers.Conv2D(f, 3, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dense(dense, activation="relu")(x)
    if dropout:
        x = layers.Dropout(dropout)(x)
    return keras.Model(inputs, _head(x, num_classes), name="small_cnn")


def build_lambda_cnn(input_shape, num_classes, filters=(32, 64), dense=256, dropout=0.0) -> keras.Model:
    """The classic Sequential tutorial model, with its normalisation inside the model ([0, 1] -> [-1, 1])."""
    stack = [keras.Input(shape=input_shape), layers.Normalization(mean=0.5, variance=0.25)]
    for f in filters:
        stack += [layers.Conv2D(f, 3, padding="same", activation="relu"),
                  layers.Conv2D(f, 3, padding="same", activation="relu"), layers.MaxPooling2D()]
    stack += [layers.Flatten(), layers.Dense(dense, activation="relu")]
    if dropout:
        stack.append(layers.Dropout(dropout))
    stack.append(_head_layer(num_classes, name=None))
    return keras.Sequential(stack, name="lambda_cnn")


def build_resnet(input_shape, num_classes, widths=(16, 32, 64), blocks_per_stage=1) -> keras.Model:
    """A small pre-activation-free ResNet for ~32 px inputs: a stem, then residual stages that halve the size."""
    inputs = keras.Input(shape=input_shape)
    x = layers.Conv2D(widths[0], 3, padding="same", use_bias=False)(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    for stage, width in enumerate(widths):
        for block in range(blocks_per_stage):
            stride = 2 if stage > 0 and block == 0 else 1
            shortcut = x
            y = layers.Conv2D(width, 3, strides=stride, padding="same", use_bias=False)(x)
            y = layers.BatchNormalization()(y)
            y = layers.Activation("relu")(y)
            y = layers.Conv2D(width, 3, padding="same", use_bias=False)(y)
            y = layers.BatchNormalization()(y)
            if stride != 1 or shortcut.shape[-1] != width:
                shortcut = layers.Conv2D(width, 1, strides=stride, use_bias=False)(shortcut)
                shortcut = layers.BatchNormalization()(shortcut)
            x = layers.Activation("relu")(layers.Add()([y, shortcut]))
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, _head(x, num_classes), name="resnet")


def imagenet_weights_file(input_shape, alpha: float) -> Path:
    """Where Keras caches MobileNetV2's ImageNet weights (no-top) for this size: keras.applications' own name."""
    rows = input_shape[0] if input_shape[0] in (96, 128, 160, 192, 224) else 224
    name = f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{rows}_no_top.h5"
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models" / name


def build_mobilenet_v2(input_shape, num_classes, weights=None, alpha=1.0, trainable_base=True, dropout=0.2) -> keras.Model:
    """keras.applications.MobileNetV2 as a feature extractor; `weights: imagenet` loads the locally cached file
    (no download at run time), `trainable_base: false` freezes it for transfer learning."""
    inputs = keras.Input(shape=input_shape)
    # MobileNetV2 expects [-1, 1] and, with ImageNet weights, three channels.
    x = layers.Rescaling(2.0, offset=-1.0)(inputs)
    channels = input_shape[-1]
    if weights == "imagenet" and channels == 1:
        x = layers.Concatenate()([x, x, x])
        channels = 3
    base_weights = str(imagenet_weights_file(input_shape, alpha)) if weights == "imagenet" else None
    base = keras.applications.MobileNetV2(input_shape=(*input_shape[:2], channels), alpha=alpha, include_top=False,
                                          weights=base_weights, pooling="avg")
    base.trainable = bool(trainable_base)
    x = base(x, training=False if not trainable_base else None)
    if dropout:
        x = layers.Dropout(dropout)(x)
    return keras.Model(inputs, _head(x, num_classes), name="mobilenet_v2")


def build_conv_autoencoder(input_shape, num_classes, filters=(16, 32, 64), task="reconstruct") -> keras.Model:
    """A small convolutional encoder-decoder: stride-2 convolutions halve the image once per entry of `filters`,
    transposed stride-2 convolutions double it back, and the head outputs an image with the input's channels
    (tasks reconstruct and inpaint). With task=classify the encoder alone feeds a classifier head instead."""
    inputs = keras.Input(shape=input_shape)
    x = inputs
    for f in filters:
        x = layers.Conv2D(f, 3, strides=2, padding="same", activation="relu")(x)
    if task == "classify":
        return keras.Model(inputs, _head(layers.GlobalAveragePooling2D()(x), num_classes), name="conv_autoencoder")
    for f in reversed(filters):
        x = layers.Conv2DTranspose(f, 3, strides=2, padding="same", activation="relu")(x)
    return keras.Model(inputs, _image_head(x, input_shape[-1]), name="conv_autoencoder")


def _factory(name: str):
    return globals().get(f"build_{name}")


def image_to_image(name: str) -> bool:
    """Whether model `name` can output images: its factory takes the `task` (set from the config's `task`, not
    a hyperparameter of the model file)."""
    factory = _factory(name)
    return factory is not None and "task" in inspect.signature(factory).parameters


def _hyperparameters(cfg) -> dict:
    hp = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    hp.pop("name")
    return hp


def check(cfg) -> None:
    """Config-time checks for the `model` node, without building anything."""
    if not _factory(cfg.name):
        raise ConfigError(f"model.name: no model {cfg.name!r} (expected a conf/model/<name>.yaml with a build_<name>)")
    hp = _hyperparameters(cfg)
    if cfg.name == "mobilenet_v2":
        if hp.get("weights") not in (None, "imagenet"):
            raise ConfigError(f"model.weights: expected null or imagenet, got {hp.get('weights')!r}")
    accepted = set(inspect.signature(_factory(cfg.name)).parameters) - {"input_shape", "num_classes", "task"}
    unknown = sorted(set(hp) - accepted)
    if unknown:
        raise ConfigError(f"model.{unknown[0]}: not an argument of build_{cfg.name} (expected one of {', '.join(sorted(accepted))})")


def check_input(cfg, input_shape) -> None:
    """Checks that need the data's shape (known after loading, still before any run is opened)."""
    if cfg.name == "mobilenet_v2":
        if min(input_shape[:2]) < 32:
            raise ConfigError(f"dataset.image_size: model mobilenet_v2 needs images of at least 32 px, got "
                              f"{min(input_shape[:2])}")
        if cfg.get("weights") == "imagenet":
            path = imagenet_weights_file(input_shape, cfg.get("alpha", 1.0))
            if not path.exists():
                raise ConfigError(f"model.weights: ImageNet weights not found at {path}; place the file there "
                                  "(no download at run time) or set model.weights=null")
    if cfg.name == "conv_autoencoder":
        halvings = len(cfg.get("filters", inspect.signature(build_conv_autoencoder).parameters["filters"].default))
        step = 2 ** halvings
        if input_shape[0] % step or input_shape[1] % step:
            raise ConfigError(f"dataset.image_size: model conv_autoencoder halves the image {halvings} times "
                              f"(model.filters), so its size must be a multiple of {step}, got "
                              f"{input_shape[0]}x{input_shape[1]}")


def for_inference(model: keras.Model) -> keras.Model:
    """What a run saves as model.keras: the trained model as it predicts, which plain Keras loads. Without the
    mixing train step (mix_step.plain) and without device augmentation in front of the backbone: its layers pass
    images through outside training, and are ablation.augment.device classes a plain load would not know. Weights are
    shared with `model`."""
    from ablation.augment import device, mix_step

    model = mix_step.plain(model)
    backbone = model.layers[-1]
    bare = device.unwrap(backbone)
    if bare is backbone:
        return model
    inputs = keras.Input(shape=model.input_shape[1:], dtype="uint8", name="images")
    return keras.Model(inputs, bare(model.get_layer("rescale")(inputs)), name=model.name)


def build(cfg, input_shape, num_classes: int, augmentation: keras.Sequential | None = None,
          normalization: keras.layers.Layer | None = None, task: str = "classify",
          mix: str | None = None) -> keras.Model:
    """The trainable model for uint8 images of input_shape; `augmentation` (device.layers_for) runs in training
    only, between the rescale and the backbone; `normalization` (normalize.Normalization.layer) right in front
    of the backbone: images -> rescale -> [augmentation] -> [normalization] -> backbone. `task` (ablation/training/tasks.py)
    picks the head of a model that has more than one: classes, or an image for reconstruct and inpaint.
    `mix` (augmentation.mix, ablation/augment/mixing.py): "host" or "device" gives a mix_step.MixingModel, which trains on
    mixed batches, and with "device" mixes their images in its train step."""
    from ablation.augment import device

    check(cfg)
    check_input(cfg, input_shape)
    hp = _hyperparameters(cfg)
    if image_to_image(cfg.name):
        hp["task"] = task
    elif task != "classify":
        raise ConfigError(f"model.name: {cfg.name} outputs class probabilities; task {task} needs an image-to-image "
                          "model (model=conv_autoencoder)")
    backbone = _factory(cfg.name)(tuple(input_shape), num_classes, **hp)
    if normalization is not None:
        # After the augmentation, as ImageDataGenerator standardises after its random transforms: host
        # augmentation has already happened on the uint8 images, and device augmentation's photometric layers
        # (brightness, channel shift, fill values) are defined on [0, 1] images, not on standardised ones.
        features = keras.Input(shape=tuple(input_shape), name="features")
        backbone = keras.Model(features, backbone(normalization(features)), name=backbone.name)
    backbone = device.wrap(backbone, augmentation)
    inputs = keras.Input(shape=tuple(input_shape), dtype="uint8", name="images")
    outputs = backbone(layers.Rescaling(1 / 255, name="rescale")(inputs))
    if mix is not None:
        from ablation.augment.mix_step import MixingModel

        return MixingModel(inputs, outputs, name=backbone.name, mix_on_device=mix == "device")
    return keras.Model(inputs, outputs, name=backbone.name)

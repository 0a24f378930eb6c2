"""Validation of the composed config: every mistake is reported, naming its key, before any data is read
or any MLflow run is opened."""
from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from ablation.core import renamed
from ablation.core.errors import ConfigError, user_error  # noqa: F401  (re-exported: config.ConfigError, config.user_error)
from ablation.core.values import choice as _choice
from ablation.core.values import number as _number

MONITORS = ("val_loss", "val_accuracy")


def validate(cfg: DictConfig):
    """Raise ConfigError (or the dataset/policy modules' own one-line errors) for the first bad setting.
    Returns the augmentation policy it built on the way (augment.Policy), so the caller need not build it again."""
    from ablation import augment, datasets
    from ablation.training import backend, models, normalize, tasks

    missing = sorted(OmegaConf.missing_keys(cfg))
    # dataset.path is reported by the dataset check with an example of how to set it.
    missing = [k for k in missing if k != "dataset.path"]
    if missing:
        raise ConfigError(f"{missing[0]}: required value is missing (set it on the command line: {missing[0]}=...)")

    renamed.check_config(cfg)  # a key renamed since (design, inpaint.mask, augmentation.where ...): its new name
    _number(cfg, "seed", minimum=0, integer=True)

    _number(cfg, "trainer.epochs", minimum=1, integer=True)
    _number(cfg, "trainer.batch_size", minimum=1, integer=True)
    _number(cfg, "trainer.steps_per_epoch", minimum=1, integer=True, optional=True)
    _number(cfg, "trainer.eval_batch_size", minimum=1, integer=True, optional=True)
    _number(cfg, "trainer.steps_per_execution", minimum=1, integer=True, optional=True)
    if OmegaConf.select(cfg, "trainer.epoch_evaluation") is not None:  # absent from a trainer file: scorer
        _choice(cfg, "trainer.epoch_evaluation", ("scorer", "keras"))
    if OmegaConf.select(cfg, "trainer.keep_compiled") is not None:  # absent from a trainer file: true
        _choice(cfg, "trainer.keep_compiled", (True, False))
    _number(cfg, "trainer.learning_rate", minimum=0, strict=True)
    _number(cfg, "trainer.workers", minimum=1, integer=True)
    _number(cfg, "trainer.max_queue_size", minimum=1, integer=True)
    _number(cfg, "trainer.clean_train_size", minimum=1, integer=True, optional=True)
    _choice(cfg, "trainer.verbose", (0, 1, 2))
    _choice(cfg, "trainer.monitor", MONITORS)
    _optimizer(cfg.trainer.optimizer)
    if not isinstance(cfg.trainer.get("resume"), bool) and cfg.trainer.get("resume") != "auto":
        raise ConfigError(f"trainer.resume: expected true, false or auto, got {cfg.trainer.get('resume')!r}")
    backend.check_settings(cfg.trainer)
    if cfg.trainer.devices != 1:
        backend.devices_for(cfg.trainer)  # more devices than visible: said now, before any data is read
    for name in ("early_stopping", "reduce_lr"):
        _number(cfg, f"trainer.{name}.patience", minimum=0, integer=True)
    _number(cfg, "trainer.reduce_lr.factor", minimum=0, strict=True)
    if cfg.trainer.reduce_lr.factor >= 1:
        raise ConfigError(f"trainer.reduce_lr.factor: expected a number in (0, 1), got {cfg.trainer.reduce_lr.factor!r}")

    _placement(cfg)
    _synthetic(cfg)
    check_lenses(cfg)
    check_tracking(cfg)
    models.check(cfg.model)
    datasets.check(cfg.dataset)
    normalize.check(cfg.dataset)
    size, channels = cfg.dataset.get("image_size"), cfg.dataset.get("channels")
    if size and channels:  # known before loading for every source but npz with stored sizes
        models.check_input(cfg.model, (size, size, channels))
        if cfg.augmentation.get("placement") == "device":  # a transform without a Keras layer is named now
            from ablation.augment import device

            device.layers_for(cfg.augmentation, (size, size, channels), cfg.seed)
    # With the image shape known, the policy is also tried once on a blank image of it: a transform that fails
    # on such images is named now, not in the middle of an epoch.
    policy = augment.build(cfg.augmentation, image_shape=(size, size, channels) if size and channels else None)
    tasks.check(cfg)
    return policy


def check_tracking(cfg: DictConfig) -> None:
    """tracking.heartbeat_s and heartbeat_grace_s (seconds, > 0; absent from an older tracking config: the
    defaults); tracking.register_model: the name a sweep registers its recommended run's MLflow Model under."""
    for key in ("tracking.heartbeat_s", "tracking.heartbeat_grace_s"):
        _number(cfg, key, minimum=0, strict=True, optional=True)
    name = OmegaConf.select(cfg, "tracking.register_model", default=None)
    if name is None:
        return
    if not isinstance(name, str) or not name.strip() or "/" in name or ":" in name:
        raise ConfigError(f"tracking.register_model: expected a registered model name such as digits_best (no '/' "
                          f"or ':'), or null, got {name!r}")
    if not cfg.tracking.get("log_model"):
        raise ConfigError("tracking.register_model: registers a run's logged model, but tracking.log_model=false; "
                          "set tracking.log_model=true or tracking.register_model=null")


def check_lenses(cfg: DictConfig) -> None:
    """lenses.*: the corruption suite each classifier is also scored on (ablation/lenses/corruptions.py)."""
    from ablation.lenses import corruptions

    if cfg.get("lenses") is None:
        return
    names = OmegaConf.select(cfg, "lenses.corruptions")
    if names is None or isinstance(names, str) or not hasattr(names, "__iter__"):
        raise ConfigError(f"lenses.corruptions: expected a list of corruptions ([] for none), got {names!r}")
    for i, name in enumerate(names):
        if name not in corruptions.CORRUPTIONS:
            raise ConfigError(f"lenses.corruptions[{i}]: expected one of {', '.join(corruptions.CORRUPTIONS)}, "
                              f"got {name!r}")
    severities = OmegaConf.select(cfg, "lenses.severities")
    if names and (severities is None or isinstance(severities, str) or not len(severities)
                  or any(s not in corruptions.SEVERITIES or isinstance(s, bool) for s in severities)):
        raise ConfigError(f"lenses.severities: expected a non-empty list of severities from 1 to 5, got "
                          f"{OmegaConf.to_container(severities) if hasattr(severities, '_content') else severities!r}")
    _number(cfg, "lenses.corruption_images", minimum=1, integer=True, optional=True)
    for key in ("per_class", "affinity"):
        if not isinstance(cfg.lenses.get(key, True), bool):
            raise ConfigError(f"lenses.{key}: expected true or false, got {cfg.lenses.get(key)!r}")


def _placement(cfg: DictConfig) -> None:
    """augmentation.placement (host|device|offline) and the settings of the offline expansion
    (ablation/training/expansion.py)."""
    import re

    from ablation import augment
    from ablation.training import expansion

    _choice(cfg, "augmentation.placement", augment.PLACES)
    _number(cfg, "augmentation.copies", minimum=1, integer=True)
    _choice(cfg, "augmentation.save_format", expansion.FORMATS)
    aug = cfg.augmentation
    prefix = aug.get("save_prefix")
    if not isinstance(prefix, str) or not re.fullmatch(expansion.PREFIX_PATTERN, prefix):
        raise ConfigError(f"augmentation.save_prefix: expected the start of a file name (letters, digits, _ . -, "
                          f"starting with a letter or digit), got {prefix!r}")


def _synthetic(cfg: DictConfig) -> None:
    """augmentation.synthetic: the generator whose images join the training set (ablation/training/synthetic.py)."""
    from ablation.training import synthetic

    if cfg.augmentation.get("synthetic") is None:
        return
    synthetic.check(cfg)
    key = synthetic.KEY
    _number(cfg, f"{key}.ratio", minimum=0)
    for name in ("per_class", "epochs", "batch_size", "latent_dim", "width"):
        _number(cfg, f"{key}.{name}", minimum=1, integer=True)
    _number(cfg, f"{key}.learning_rate", minimum=0, strict=True)


def _optimizer(name) -> None:
    import keras

    try:
        keras.optimizers.get(name)
    except (ValueError, TypeError):
        raise ConfigError(f"trainer.optimizer: unknown Keras optimizer {name!r} (e.g. adam, sgd, rmsprop, adamw)") from None

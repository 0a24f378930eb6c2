"""plan(cfg) -> RunPlan: what one combination is, decided before any data is read or any run is opened.

Each setting is checked on its own by config.validate; the rules that tie settings together (where augmentation
happens × the task × the model × batch mixing) are checked here, in one place. The plan is frozen: the run reads
it and never decides again."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from omegaconf import DictConfig

from ablation import augment, tracking
from ablation.core.errors import ConfigError
from ablation.training import config, expansion, models, synthetic, tasks


@dataclass(frozen=True)
class Placement:
    """Where the policy runs (augmentation.placement). host: the training batches augment each batch (worker
    threads). device: Keras layers in front of the model augment inside the train step. offline: the policy wrote
    an expanded training set ahead of training, which the batches read as they are. Batch mixing (MixUp, CutMix)
    happens on the host or in the model's train step (mix_at), or nowhere."""
    where: str
    mix_at: str | None

    @property
    def batches_augment(self) -> bool:
        return self.where == "host"

    @property
    def model_layers(self) -> bool:
        return self.where == "device"


@dataclass(frozen=True)
class RunPlan:
    name: str           # <augmentation>/<model>/s<seed>: the MLflow run name
    key: str            # config_hash: the combination's identity, which makes sweeps resumable
    policy: augment.Policy
    task: str           # classify | reconstruct | inpaint
    seed: int
    placement: Placement
    tags: Mapping[str, str]


def plan(cfg: DictConfig) -> RunPlan:
    """Raise a UserError naming the key for the first bad setting or combination of settings."""
    policy = config.validate(cfg)
    check_combinations(cfg, policy)
    task = tasks.name_of(cfg)
    where = cfg.augmentation.get("placement", "host")
    placement = Placement(where=where, mix_at=("device" if where == "device" else "host") if policy.mix else None)
    label = synthetic.label(cfg, policy.is_identity and policy.mix is None, expansion.label(cfg, policy.name))
    key = tracking.config_hash(cfg, policy.fingerprint)
    tags = {"dataset": cfg.dataset.name, "model": cfg.model.name, "augmentation": label,
            "policy": cfg.augmentation.name, "seed": cfg.seed, "experiment": cfg.experiment_name, "config_hash": key,
            "policy_fingerprint": policy.fingerprint, "task": task,
            "augmentation_mode": "offline" if expansion.offline(cfg) else "online",
            "train_batches_policy": policy.name if placement.batches_augment else "none"}
    return RunPlan(name=f"{label}/{cfg.model.name}/s{cfg.seed}", key=key, policy=policy, task=task, seed=cfg.seed,
                   placement=placement, tags=MappingProxyType({k: str(v) for k, v in tags.items()}))


def check_combinations(cfg: DictConfig, policy: augment.Policy) -> None:
    """The rules between settings; each message names the key to change and why."""
    task = tasks.name_of(cfg)
    placement = cfg.augmentation.get("placement", "host")
    offline, on_device = placement == "offline", placement == "device"
    if synthetic.active(cfg):  # generated training images (ablation/training/synthetic.py)
        _check_synthetic(task, offline, on_device)
    if policy.mix is not None:  # MixUp / CutMix (ablation/augment/mixing.py)
        if task != "classify":
            raise ConfigError(f"augmentation.mix: {policy.mix.label} mixes the class labels of two images; task "
                              f"{task} has none (use task=classify, or a policy without mix)")
        if offline:
            raise ConfigError(f"augmentation.mix: {policy.mix.label} mixes each training batch as it is drawn; "
                              f"augmentation.placement=offline writes single images ahead of training (use "
                              f"placement=host or device)")
    if task == "classify":
        return
    if cfg.trainer.monitor != "val_loss":
        raise ConfigError(f"trainer.monitor: task {task} has no accuracy; expected val_loss, got "
                          f"{cfg.trainer.monitor!r}")
    if not models.image_to_image(cfg.model.name):
        raise ConfigError(f"model.name: {cfg.model.name} outputs class probabilities; task {task} needs an "
                          "image-to-image model (model=conv_autoencoder)")
    if on_device:
        raise ConfigError(f"augmentation.placement: device augments inside the model, after the target is taken; "
                          f"task {task} needs placement=host")
    if task == "inpaint":
        if offline:
            raise ConfigError("augmentation.placement: offline writes photometric changes into the training images, "
                              "so the inpaint target would carry them; use placement=host with task=inpaint")
        policy.split()  # inpaint applies the spatial part to input, target and mask, the photometric to the input


def _check_synthetic(task: str, offline: bool, on_device: bool) -> None:
    key = f"{synthetic.KEY}.ratio"
    if task != "classify":
        raise ConfigError(f"{key}: the generator makes images of a given class; task {task} has no classes to ask it "
                          f"for (use task=classify, or {key}=0)")
    if on_device:
        raise ConfigError(f"{key}: generated images are mixed into the training split on the host, before batching; "
                          f"augmentation.placement=device (a policy placed inside the model) is not combined with "
                          f"them (use augmentation.placement=host, or {key}=0)")
    if offline:
        raise ConfigError(f"{key}: augmentation.placement=offline trains on a written expansion of the real images "
                          f"only; generated images join the training set online (use augmentation.placement=host, or "
                          f"{key}=0)")

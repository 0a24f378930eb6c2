"""The combination's identity: the resolved config as flat params, and the key that makes sweeps resumable."""
from __future__ import annotations

import hashlib
import json

from omegaconf import DictConfig, OmegaConf


def flatten(cfg: DictConfig) -> dict[str, str]:
    """The resolved config as flat `a.b.c` params (lists kept as their JSON text)."""
    out: dict[str, str] = {}

    def walk(node, prefix):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            out[prefix[:-1]] = json.dumps(node) if isinstance(node, (list, tuple)) else str(node)

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return out


# Settings that change how a combination is run, recorded, scored beyond its test split or reported, or where its
# outputs go, not what is trained. force, design and strength are the sweep's settings before they moved under
# `sweep` (ablation/conf/sweep/), left here for configs composed in that form.
NOT_IDENTITY = ("tracking", "sweep", "force", "design", "strength", "report", "paths", "lenses")
# Trainer settings that change how fast a run goes, not its results (the same scores to float precision).
EXECUTION_KEYS = ("verbose", "workers", "use_multiprocessing", "max_queue_size", "resume", "devices", "jit_compile",
                  "eval_batch_size", "epoch_evaluation", "steps_per_execution", "keep_compiled")


def config_hash(cfg: DictConfig, policy_fingerprint: str) -> str:
    """The combination's key: its resolved config without where it is tracked or how it is run, with the
    augmentation reduced to the policy's name and fingerprint (so `none` is one combination however it was
    reached). Re-running a sweep skips keys that already finished.

    The key is taken over the config as it was laid out before the task group and augmentation.placement
    (legacy_form), so runs recorded then keep their keys."""
    data = legacy_form(OmegaConf.to_container(cfg, resolve=True))
    for key in NOT_IDENTITY:
        data.pop(key, None)
    for key in EXECUTION_KEYS:
        data.get("trainer", {}).pop(key, None)
    data.get("dataset", {}).pop("cache", None)
    # Settings at their defaults are left out, so combinations recorded before the setting existed keep their key.
    for key, default in (("normalize", "rescale"), ("on_bad_image", "error")):
        if data.get("dataset", {}).get(key) == default:
            data["dataset"].pop(key)
    # The task's settings count only where they apply, so classify runs keep the keys they had before tasks existed.
    if data.get("task", "classify") != "inpaint":
        data.pop("inpaint", None)
    if data.get("task") == "classify":
        data.pop("task")
    augmentation = data["augmentation"]
    data["augmentation"] = {"fingerprint": policy_fingerprint, "where": augmentation.get("where", "host")}
    if augmentation.get("mode", "online") == "offline":
        # Trained on a written expansion: its size and format are part of what is trained. Online keys stay as
        # they were, so runs recorded before the mode existed are still recognised.
        data["augmentation"].update({k: augmentation.get(k) for k in ("mode", "copies", "save_format")})
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def legacy_form(data: dict) -> dict:
    """The resolved config in the layout run keys were first taken over: the task as a name (`task: inpaint`)
    with the inpaint settings under `inpaint`, and augmentation.placement as `where` (host|device) plus
    `mode: offline` for an offline expansion. A config already in that layout is returned as it is."""
    task = data.get("task")
    if isinstance(task, dict):
        settings = dict(task)
        data["task"] = settings.pop("name", "classify")
        data["inpaint"] = settings
    augmentation = data.get("augmentation")
    if isinstance(augmentation, dict) and "placement" in augmentation:
        placement = augmentation.pop("placement")
        augmentation["where"] = "host" if placement == "offline" else placement
        augmentation["mode"] = "offline" if placement == "offline" else "online"
    return data

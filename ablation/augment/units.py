"""Ablation units: what a leave-one-out or add-one-in design removes or keeps."""
from __future__ import annotations

import os

# albumentations checks PyPI for a newer version on import: slow or hanging on offline machines.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


from ablation.augment.checks import IDG_SETTINGS, ROOT_KEY, fail, plain
from ablation.augment.parse import parse_mix

# --------------------------------------------------------------------------------------------------------------
# Ablation units: what a leave-one-out or add-one-in design removes or keeps. A top-level transform is one
# unit (named by its class, with #2, #3 for repeats); an ImageDataGenerator argument is one unit (named by the
# argument), so `idg_classic-rotation_range` keeps the zoom and shifts of the same warp.

def units(cfg) -> list[str]:
    """The ablation units of a policy config, in order: its ImageDataGenerator arguments, then its transforms."""
    return [unit for unit, _ in _unit_index(plain(cfg))]


def _unit_index(cfg: dict) -> list[tuple[str, tuple[str, object]]]:
    out: list[tuple[str, tuple[str, object]]] = []
    for key, value in (cfg.get("idg") or {}).items():
        if key not in IDG_SETTINGS and value not in (None, False, 0, 0.0):
            out.append((key, ("idg", key)))
    seen: dict[str, int] = {}
    for i, item in enumerate(cfg.get("transforms") or []):
        base = str(item.get("_target_", "?")).rpartition(".")[2] if isinstance(item, dict) else "?"
        seen[base] = seen.get(base, 0) + 1
        out.append((base if seen[base] == 1 else f"{base}#{seen[base]}", ("transforms", i)))
    mix = parse_mix(cfg.get("mix"))
    if mix is not None:  # MixUp / CutMix: one unit
        out.append((mix.label, ("mix", 0)))
    return out


def variant_name(policy: str, variant: str) -> str:
    return f"{policy}{variant}"


def apply_variant(cfg: dict, name: str, variant) -> tuple[dict, str]:
    """`-Unit` removes one unit from the policy, `+Unit` keeps only that unit (plus the fill settings)."""
    key = f"{ROOT_KEY}.variant"
    if not isinstance(variant, str) or len(variant) < 2 or variant[0] not in "+-":
        raise fail(key, f"expected -<unit> (leave one out) or +<unit> (add one in), got {variant!r}")
    index = dict(_unit_index(cfg))
    unit = variant[1:]
    if unit not in index:
        raise fail(key, f"policy {name!r} has no unit {unit!r}; its units: {', '.join(index) or 'none'}")
    keep = {index[unit]} if variant[0] == "+" else set(index.values()) - {index[unit]}
    idg = cfg.get("idg") or {}
    new_idg = {k: v for k, v in idg.items() if k in IDG_SETTINGS or ("idg", k) in keep}
    new_transforms = [t for i, t in enumerate(cfg.get("transforms") or []) if ("transforms", i) in keep]
    out = {k: v for k, v in cfg.items() if k not in ("variant", "idg", "transforms", "mix")}
    out.update(idg=new_idg or None, transforms=new_transforms, mix=cfg.get("mix") if ("mix", 0) in keep else None)
    return out, variant_name(name, variant)

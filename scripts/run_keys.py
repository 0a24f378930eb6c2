"""Print each combination's run key (config_hash) and policy fingerprint, as JSON, for every shipped policy and
experiment and a set of variants (placement, task, sweep settings).

The keys decide whether a combination already finished, so a change to the config's layout must leave them as
they are: run this before and after such a change and compare the outputs (tests/data/run_keys.json holds them,
and tests/test_config.py checks the current config against it).

    python scripts/run_keys.py [--old] > keys.json

--old spells the variants as the config did before the task, report and sweep groups and augmentation.placement
(task=inpaint inpaint.mask=..., augmentation.where / augmentation.mode, design, strength, force)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ablation.cli.compose import compose_from_argv
from ablation.core import paths
from ablation.training.plan import plan

AE = ["model=conv_autoencoder"]
# name: (overrides in today's spelling, overrides in the spelling before the config groups)
VARIANTS = {
    "device/rotate": (["augmentation=rotate", "augmentation.placement=device"],
                      ["augmentation=rotate", "augmentation.where=device"]),
    "device/idg_classic": (["augmentation=idg_classic", "augmentation.placement=device"],
                           ["augmentation=idg_classic", "augmentation.where=device"]),
    "device/mixup": (["augmentation=mixup", "augmentation.placement=device"],
                     ["augmentation=mixup", "augmentation.where=device"]),
    "host/explicit": (["augmentation=hflip", "augmentation.placement=host"],
                      ["augmentation=hflip", "augmentation.where=host", "augmentation.mode=online"]),
    "offline/rotate": (["augmentation=rotate", "augmentation.placement=offline"],
                       ["augmentation=rotate", "augmentation.mode=offline"]),
    "offline/none_jpg": (["augmentation=none", "augmentation.placement=offline", "augmentation.copies=2",
                          "augmentation.save_format=jpg"],
                         ["augmentation=none", "augmentation.mode=offline", "augmentation.copies=2",
                          "augmentation.save_format=jpg"]),
    "reconstruct": (["task=reconstruct", *AE], ["task=reconstruct", *AE]),
    "reconstruct/hflip": (["task=reconstruct", *AE, "augmentation=hflip"],
                          ["task=reconstruct", *AE, "augmentation=hflip"]),
    "inpaint": (["task=inpaint", *AE], ["task=inpaint", *AE]),
    "inpaint/ellipse": (["task=inpaint", *AE, "task.mask=ellipse", "task.fill=128", "task.center_y=0.5"],
                        ["task=inpaint", *AE, "inpaint.mask=ellipse", "inpaint.fill=128", "inpaint.center_y=0.5"]),
    "classify/inpaint_settings": (["augmentation=rotate"], ["augmentation=rotate", "inpaint.mask=ellipse"]),
    "strength/levels": (["augmentation=rotate", "sweep.design=strength", "sweep.levels=[0,0.5,2]",
                         "augmentation.strength=0.5"],
                        ["augmentation=rotate", "design=strength", "strength=[0,0.5,2]", "augmentation.strength=0.5"]),
    "grid/rerun": (["augmentation=shift", "sweep.design=leave_one_out", "sweep.rerun=true"],
                   ["augmentation=shift", "design=leave_one_out", "force=true"]),
    "report/holm": (["augmentation=rotate", "report.correction=holm"],
                    ["augmentation=rotate", "report.correction=holm"]),
}


def cases(old: bool) -> dict[str, list[str]]:
    conf = paths.CONF
    out = {f"policy/{p.stem}": [f"augmentation={p.stem}"] for p in sorted((conf / "augmentation").glob("*.yaml"))}
    out.update({f"experiment/{p.stem}": [f"experiment={p.stem}"]
                for p in sorted((conf / "experiment").glob("*.yaml"))})
    out.update({name: list(spellings[1 if old else 0]) for name, spellings in VARIANTS.items()})
    return out


def keys(old: bool) -> dict[str, dict[str, str]]:
    out = {}
    for name, overrides in cases(old).items():
        try:
            planned = plan(compose_from_argv(overrides))
            out[name] = {"config_hash": planned.key, "policy_fingerprint": planned.policy.fingerprint}
        except Exception as exc:  # a case the config refuses is recorded as such, so both sides must refuse it
            out[name] = {"error": type(exc).__name__}
    return out


if __name__ == "__main__":
    sys.path.insert(0, str(Path.cwd()))
    print(json.dumps(keys("--old" in sys.argv[1:]), indent=1, sort_keys=True))

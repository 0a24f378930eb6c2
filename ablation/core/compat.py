"""The private APIs of Keras and Hydra that ablation relies on, each behind one small function, with the versions
it was checked against. pyproject.toml bounds both libraries below their next major version; when one of these
breaks, this is the only file to change.

Checked with keras 3.15.1 and hydra-core 1.3.8."""
from __future__ import annotations


def randaugment_operation_count(layer) -> int:
    """How many operations keras.layers.RandAugment chooses from (its private _AUGMENT_LAYERS list), to draw
    them per image instead of per batch."""
    return len(layer._AUGMENT_LAYERS)


def randaugment_seed_generator(layer):
    """The SeedGenerator keras' RandAugment draws with, in its backend (Keras' private _get_seed_generator)."""
    return layer._get_seed_generator(layer.backend._backend)


def basic_sweeper() -> type:
    """Hydra's BasicSweeper (hydra._internal), which the ablation sweeper extends with designs and validation."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    return BasicSweeper


def job_error(result) -> BaseException:
    """The exception a failed Hydra job raised (JobReturn keeps it in _return_value; its public return_value
    re-raises it)."""
    return result._return_value

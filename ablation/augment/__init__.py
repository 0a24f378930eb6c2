"""Augmentation policies: a config node (albumentations transforms, or Keras' ImageDataGenerator vocabulary)
-> a Policy that maps uint8 images to augmented uint8 images of the same shape, reproducibly from a passed-in
numpy Generator. Everything that can be wrong with a policy is found by build(cfg), before any image is read.

    checks       the keys a policy may hold and the value checks every part shares
    buffers      aligned batch buffers (batches hand them to the backend without a copy)
    idg          ImageDataGenerator semantics no albumentations transform has (KerasAffine, KerasChannelShift)
    randaugment  RandAugment on the host, with Keras' operations and magnitudes
    mixing       MixUp and CutMix: the batch-level part of a policy, its numbers and the host's mixing
    parse        a policy config -> a tree of checked nodes; the ImageDataGenerator vocabulary -> the same nodes
    units        what a leave-one-out or add-one-in design removes or keeps
    fastpath     the ImageDataGenerator vocabulary applied batch-wise (one warp per image, no Compose)
    policy       Policy and build(cfg)
    layers, pixel_layers, device   the same policy as Keras layers inside the model (`augmentation.placement=device`)
    mix_step     the device's half of mixing: the train step of a model that mixes its batches (Keras)

Modules import each other downwards in this list only. Callers import from here.
"""
from ablation.augment.buffers import BATCH_ALIGNMENT, empty_batch
from ablation.augment.checks import FILL_MODES, PLACES, ROOT_KEY, TOP_LEVEL_KEYS, PolicyError
from ablation.augment.idg import KerasAffine, KerasChannelShift, keras_affine_matrices, keras_affine_matrix
from ablation.augment.policy import Policy, build
from ablation.augment.randaugment import RandAugment
from ablation.augment.units import apply_variant, units, variant_name

__all__ = ["BATCH_ALIGNMENT", "FILL_MODES", "PLACES", "ROOT_KEY", "TOP_LEVEL_KEYS", "KerasAffine", "KerasChannelShift",
           "Policy", "PolicyError", "RandAugment", "apply_variant", "build", "empty_batch", "keras_affine_matrices",
           "keras_affine_matrix", "units", "variant_name"]

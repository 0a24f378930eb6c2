"""Policy: a validated augmentation policy that maps uint8 images to augmented uint8 images of the same shape,
reproducibly from a passed-in numpy Generator; build(cfg) makes one and finds everything that can be wrong with it
before any image is read."""
from __future__ import annotations

import hashlib
import json
import os
import random
import threading

# albumentations checks PyPI for a newer version on import: slow or hanging on offline machines.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A
import cv2
import numpy as np

from ablation.augment import strength as scaling
from ablation.augment.buffers import empty_batch
from ablation.augment.checks import (
    DROPOUTS,
    PLACEHOLDER_SIZE,
    PLACES,
    RGB_ONLY,
    ROOT_KEY,
    TOP_LEVEL_KEYS,
    PolicyError,
    fail,
    plain,
)
from ablation.augment.parse import Node, idg_nodes, make_compose, parse_mix, parse_transforms
from ablation.augment.randaugment import RandAugment
from ablation.augment.units import apply_variant
from ablation.core import renamed


class Policy:
    """A validated augmentation policy. `policy(image, rng)` / `policy.augment_batch(images, rng)`: uint8 in,
    uint8 of the same shape out; the result depends only on the images and the state of `rng`."""

    def __init__(self, name: str, nodes: list[Node], template: A.Compose, mix=None, strength: float | None = None,
                 scaled_from: str | None = None, synthetic: dict | None = None):
        self.name = name
        # Batch mixing (MixUp, CutMix: ablation/augment/mixing.py), applied by the batches after these transforms.
        self.mix = mix
        self.transform_names = [node.cls.__name__ for node in nodes]
        self.is_identity = not nodes
        self._nodes = nodes
        self.tried_on: tuple[int, ...] | None = None  # the image shape try_on applied it to
        every = [n for node in nodes for n in node.walk()]
        self._auto_size = any(n.auto_size for n in every)
        self._needs_rgb = any(n.cls.__name__ in RGB_ONLY for n in every)
        serialized = A.to_dict(template)
        for data, node in zip(serialized["transform"]["transforms"], nodes):
            _blank_auto_sizes(data, node)
        # Through JSON once: tuples become lists, so to_dict() equals what a JSON reader gets back.
        if mix is not None:
            serialized["mix"] = mix.to_dict()
        if synthetic is not None:  # generated images join the training set: what is trained on, so its identity
            serialized["synthetic"] = synthetic
        if strength is not None:  # a level of a dose-response design: its own combination, even at 0 or 1
            serialized["strength"] = strength
            if strength == 0:  # no transform left to tell policies apart: the policy scaled to nothing
                serialized["scaled_from"] = scaled_from
        self._dict = json.loads(json.dumps(serialized))
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"Policy({self.name!r}, {self.transform_names}, fingerprint={self.fingerprint!r})"

    def try_on(self, image_shape: tuple[int, ...]) -> None:
        """Apply the policy once to a blank image of this shape, so a transform that fails on such images (a crop
        larger than the image, a change of shape) does so now, named by its key (PolicyError); once per shape."""
        shape = tuple(image_shape)
        if not self.is_identity and self.tried_on != shape:
            _try(self, self._nodes, shape)
            self.tried_on = shape

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.is_identity:
            return image
        image = np.asarray(image)
        if image.ndim != 3:
            raise ValueError(f"expected one HxWxC image, got shape {image.shape}")
        return self.augment_batch(image[None], rng)[0]

    def augment_batch(self, images: np.ndarray, rng: np.random.Generator, masks: np.ndarray | None = None):
        """images (B, H, W, C) uint8 -> augmented images; with masks (B, H, W), (images, masks): each mask goes
        through the same spatial transforms as its image (albumentations' mask target, nearest-neighbour), and
        photometric ones leave it alone."""
        if self.is_identity:
            return images if masks is None else (images, masks)
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
        images = np.asarray(images)
        if images.ndim != 4 or images.dtype != np.uint8:
            raise ValueError(f"expected a uint8 batch of shape (B, H, W, C), got {images.dtype} {images.shape}")
        if masks is not None and np.shape(masks) != images.shape[:3]:
            raise ValueError(f"expected one (H, W) mask per image, {images.shape[:3]}, got {np.shape(masks)}")
        out_masks = None if masks is None else np.empty_like(masks)
        compose = self._compose(images.shape[1:3])
        # Masks (image-to-image tasks) go through albumentations' mask target, which only the Compose applies.
        batch_path = self._batch_path(compose) if masks is None else None
        if batch_path is not None:  # the ImageDataGenerator vocabulary: batch-wise, without a Compose per image
            return batch_path(images, rng)
        # One seed per batch: re-seeding albumentations per image costs more than the small transforms themselves.
        seed = int(rng.integers(2**63))
        compose.set_random_state(np.random.default_rng(seed), random.Random(seed))
        gray_via_rgb = self._needs_rgb and images.shape[-1] == 1
        out = empty_batch(images.shape, images.dtype)
        for i, image in enumerate(images):
            if gray_via_rgb:
                image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
            data = compose(image=image) if masks is None else compose(image=image, mask=masks[i])
            result = data["image"]
            if gray_via_rgb:
                result = cv2.cvtColor(result, cv2.COLOR_RGB2GRAY)
            if result.shape[:2] != out.shape[1:3] or result.size != out[i].size:
                raise PolicyError(f"{ROOT_KEY}: policy {self.name!r} turned a {images.shape[1:]} image into "
                                  f"{result.shape}; policies must keep the image shape (leave `size` out so it "
                                  f"follows the image)")
            out[i] = result.reshape(out.shape[1:])
            if out_masks is not None:
                out_masks[i] = data["mask"].reshape(out_masks.shape[1:])
        return out if masks is None else (out, out_masks)

    def split(self) -> tuple[Policy, Policy]:
        """(spatial, photometric): the policy's transforms that move pixels (albumentations' DualTransform, which
        also transform masks) and those that change their values only (ImageOnlyTransform), each in the policy's
        order. Image-to-image tasks apply the spatial part to the input, its target and its mask alike and the
        photometric part to the input only (ablation/training/tasks.py). A nested container (OneOf, ...) belongs to the
        part all its transforms belong to; one that mixes both raises PolicyError naming its key."""
        cached = self.__dict__.get("_split")
        if cached is None:
            parts: dict[str, list[Node]] = {"spatial": [], "photometric": []}
            for node in self._nodes:
                for n in node.walk():
                    if n.children is None and _kind(n.cls) == "both":
                        raise fail(n.path, f"{n.label} both moves pixels and changes their values, in an order "
                                            "drawn per image, which an image-to-image task cannot apply apart "
                                            "(spatial to the target and mask too); use separate spatial and "
                                            "photometric transforms")
                kinds = {_kind(n.cls) for n in node.walk() if n.children is None}
                if len(kinds) > 1:
                    raise fail(node.path, f"{node.label} mixes spatial and photometric transforms, which an "
                                           "image-to-image task applies apart (spatial ones to the target and mask "
                                           "too); split it into two containers")
                parts[kinds.pop() if kinds else "photometric"].append(node)
            cached = self._split = tuple(
                Policy(f"{self.name}[{part}]", nodes, make_compose(nodes, PLACEHOLDER_SIZE))
                for part, nodes in parts.items())
        return cached

    def _compose(self, size: tuple[int, int]) -> A.Compose:
        # albumentations transforms keep per-call state (params, generators): one Compose per thread, so keras'
        # PyDataset worker threads never share one, and one per image size for transforms that take `size`.
        cache = getattr(self._local, "composes", None)
        if cache is None:
            cache = self._local.composes = {}
        key = tuple(size) if self._auto_size else None
        if key not in cache:
            cache[key] = make_compose(self._nodes, key or PLACEHOLDER_SIZE)
        return cache[key]

    def _batch_path(self, compose: A.Compose):
        from ablation.augment.fastpath import BatchPath

        cache = self._local.__dict__.setdefault("batch_paths", {})
        if id(compose) not in cache:
            cache[id(compose)] = BatchPath.of(compose)
        return cache[id(compose)]

    def to_dict(self) -> dict:
        """albumentations' serialization of the policy (A.to_dict); a `size` that follows the image is null."""
        return json.loads(json.dumps(self._dict))

    @property
    def fingerprint(self) -> str:
        text = json.dumps(self._dict, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def __getstate__(self):
        # Thread-local composes cannot be pickled (multiprocessing workers); they are rebuilt on demand.
        state = self.__dict__.copy()
        del state["_local"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._local = threading.local()


def _kind(cls: type) -> str:
    """spatial (albumentations' DualTransform: also applied to masks) or photometric (ImageOnlyTransform);
    both for RandAugment, whose operations are of either kind. The dropouts (CoarseDropout, Erasing, GridDropout,
    XYMasking, PixelDropout) are DualTransforms, but they move nothing: they blank pixels of the input, which an
    image-to-image task must not copy into its target, so they count as photometric."""
    if issubclass(cls, RandAugment):
        return "both"
    if issubclass(cls, DROPOUTS):
        return "photometric"
    return "spatial" if issubclass(cls, A.DualTransform) else "photometric"


def _blank_auto_sizes(data: dict, node: Node) -> None:
    if node.auto_size:
        data["size"] = None
    for child_data, child in zip(data.get("transforms", ()), node.children or ()):
        _blank_auto_sizes(child_data, child)


def build(cfg, image_shape: tuple[int, ...] | None = None) -> Policy:
    """The `augmentation` config node (DictConfig or dict) -> Policy; raises PolicyError on any bad setting.

    image_shape (H, W, C), optional: also try the policy once on a blank image of that shape, so problems that
    only show with real sizes (a crop larger than the image, a policy that changes the shape) surface before
    any data is loaded. Without it the policy adapts to each image's size at call time.
    """
    cfg = plain(cfg)
    if not isinstance(cfg, dict):
        raise fail(ROOT_KEY, f"expected a mapping with name and transforms, got {cfg!r}")
    for key in cfg:
        if renamed.new_key(f"{ROOT_KEY}.{key}") is not None:
            raise PolicyError(renamed.message(f"{ROOT_KEY}.{key}", str(cfg[key])))
        if key not in TOP_LEVEL_KEYS:
            raise fail(f"{ROOT_KEY}.{key}", f"unknown key; expected {', '.join(TOP_LEVEL_KEYS)}")
    name = cfg.get("name")
    if not isinstance(name, str) or not name:
        raise fail(f"{ROOT_KEY}.name", f"expected the policy's name (its file name), got {name!r}")
    if cfg.get("placement", "host") not in PLACES:
        raise fail(f"{ROOT_KEY}.placement", f"expected one of {'|'.join(PLACES)}, got {cfg.get('placement')!r}")
    if cfg.get("variant"):
        cfg, name = apply_variant(cfg, name, cfg["variant"])
    if cfg.get("strength") is None:
        return _build(cfg, name, image_shape)
    strength = scaling.check(cfg["strength"])
    scaled, scaled_name = scaling.scale(cfg, name, strength)
    try:
        return _build(scaled, scaled_name, image_shape, strength=strength, scaled_from=name)
    except PolicyError as exc:  # a scaled value the transform itself refuses: which level did it
        raise PolicyError(f"{exc} (the policy scaled to {ROOT_KEY}.strength={strength:g})") from None


def _build(cfg: dict, name: str, image_shape, strength: float | None = None, scaled_from: str | None = None):
    nodes = idg_nodes(cfg["idg"], f"{ROOT_KEY}.idg") if cfg.get("idg") is not None else []
    nodes += parse_transforms(cfg.get("transforms"), f"{ROOT_KEY}.transforms")
    mix = parse_mix(cfg.get("mix"))
    size = tuple(image_shape[:2]) if image_shape is not None else PLACEHOLDER_SIZE
    template = make_compose(nodes, size)
    for node, transform in zip(nodes, template.transforms):
        try:  # the run records the policy as albumentations' JSON, so it must serialize
            A.to_dict(transform)
        except (NotImplementedError, ValueError, TypeError) as exc:
            raise fail(node.path, f"{node.label}: cannot be recorded ({' '.join(str(exc).split())})") from None
    # The generator's settings, while it is on (ratio > 0; ablation/training/synthetic.py checks them).
    synthetic = cfg.get("synthetic") if (cfg.get("synthetic") or {}).get("ratio") else None
    policy = Policy(name, nodes, template, mix=mix, strength=strength, scaled_from=scaled_from, synthetic=synthetic)
    if image_shape is not None:
        policy.try_on(image_shape)
    return policy


def _try(policy: Policy, nodes: list[Node], image_shape: tuple[int, ...]) -> None:
    """Apply the policy once to a blank image of the data's shape, so a transform that fails on such images does
    so now, named by its key, rather than in the middle of an epoch."""
    blank = np.zeros((1, *image_shape), np.uint8)
    try:
        policy.augment_batch(blank, np.random.default_rng(0))
        return
    except PolicyError:
        raise
    except Exception as exc:  # any failure here is the policy's, reported as a config error
        problem = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
    culprit = ROOT_KEY
    for node in nodes:  # blame the first transform that fails on its own
        try:
            Policy(policy.name, [node], make_compose([node], image_shape[:2])).augment_batch(
                blank, np.random.default_rng(0))
        except Exception:
            culprit = f"{node.path}: {node.label}"
            break
    raise PolicyError(f"{culprit}: fails on a {'x'.join(map(str, image_shape))} image ({problem})")



"""Property-based tests of augmentation policies (hypothesis): any invalid setting is a one-line PolicyError from
build() (what config.validate calls before any data is read), and any valid policy keeps the shape, dtype and value
range of uint8 images of odd sizes, 1 and 3 channels.

Derandomized: the same examples on every machine and every run, so CI is reproducible."""
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ablation import augment
from ablation.augment import PolicyError
from ablation.training import config

FUZZ = settings(max_examples=80, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])
SIZES = [(17, 23), (23, 17), (9, 31)]


# ---------------------------------------------------------------------------------------------- valid values

def floats(low, high):
    return st.floats(low, high, allow_nan=False, allow_infinity=False)


def interval(low, high, integers=False):
    """[low', high'] with low <= low' <= high' <= high."""
    values = st.integers(low, high) if integers else floats(low, high)
    return st.tuples(values, values).map(sorted)


probability = floats(0, 1)

# albumentations transforms our policies use, each with the arguments the policies set, in their valid domains.
VALID_ARGS = {
    "Rotate": {"limit": floats(0, 180) | interval(-180, 180), "border_mode": st.sampled_from([0, 1, 2, 3, 4]),
               "interpolation": st.sampled_from([0, 1])},
    "Affine": {"scale": floats(0.5, 1.5) | interval(0.5, 1.5), "translate_percent": floats(0, 0.3) | interval(-0.3, 0.3),
               "rotate": interval(-45, 45)},
    "RandomBrightnessContrast": {"brightness_limit": floats(0, 1) | interval(-1, 1),
                                 "contrast_limit": floats(0, 1) | interval(-1, 1)},
    "GaussNoise": {"std_range": interval(0, 1), "per_channel": st.booleans()},
    # Both hole sizes in one unit: fractions of the image, or pixels (see one_bad_transform for mixed units).
    "CoarseDropout": {"num_holes_range": interval(1, 6, integers=True),
                      "hole_height_range": interval(0.05, 0.5), "hole_width_range": interval(0.05, 0.5),
                      "fill": st.integers(0, 255)},
    "CoarseDropout#pixels": {"num_holes_range": interval(1, 6, integers=True),
                             "hole_height_range": interval(1, 8, integers=True),
                             "hole_width_range": interval(1, 8, integers=True)},
    "RandomResizedCrop": {"scale": interval(0.08, 1.0), "ratio": interval(0.5, 2.0)},
    "HorizontalFlip": {},
}
IDG_VALID = {
    "rotation_range": floats(0, 180) | st.integers(0, 180),
    "width_shift_range": floats(0, 0.5) | st.integers(0, 5),
    "height_shift_range": floats(0, 0.5) | st.integers(0, 5),
    "shear_range": floats(0, 45),
    "zoom_range": floats(0, 0.9) | interval(0.5, 1.5),
    "horizontal_flip": st.booleans(),
    "vertical_flip": st.booleans(),
    "brightness_range": interval(0.2, 1.8),
    "channel_shift_range": floats(0, 100),
    "fill_mode": st.sampled_from(list(augment.FILL_MODES)),
    "cval": floats(0, 255),
}


# Arguments always given (albumentations' default would be in the other unit).
REQUIRED = {"CoarseDropout#pixels": ("hole_height_range", "hole_width_range")}


def target(name):
    return f"albumentations.{name.split('#')[0]}"


def transform(name):
    args, required = VALID_ARGS[name], REQUIRED.get(name, ())
    return st.fixed_dictionaries({"_target_": st.just(target(name)), **{k: args[k] for k in required}},
                                 optional={**{k: v for k, v in args.items() if k not in required},
                                           "p": probability}).map(plain)


def plain(value):
    """Tuples as lists, as a YAML file gives them."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


leaf = st.one_of(*(transform(name) for name in VALID_ARGS))


@st.composite
def nested(draw):
    children = draw(st.lists(leaf, min_size=1, max_size=3))
    kind = draw(st.sampled_from(["OneOf", "SomeOf", "Sequential"]))
    if kind == "OneOf" and all(child.get("p", 0.5) == 0 for child in children):
        children[0]["p"] = draw(floats(0.01, 1))  # OneOf picks by p: one must be above 0 (see the test below)
    node = {"_target_": f"albumentations.{kind}", "transforms": children, "p": draw(probability)}
    if kind == "SomeOf":
        node["n"] = draw(st.integers(1, len(children)))
    return node


valid_policy = st.fixed_dictionaries(
    {"name": st.just("fuzz"), "transforms": st.lists(leaf | nested(), max_size=3)},
    optional={"idg": st.fixed_dictionaries({}, optional=IDG_VALID).map(plain)})


@st.composite
def images(draw):
    (height, width), channels = draw(st.sampled_from(SIZES)), draw(st.sampled_from([1, 3]))
    seed = draw(st.integers(0, 2**32 - 1))
    return np.random.default_rng(seed).integers(0, 256, (2, height, width, channels), dtype=np.uint8)


def assert_keeps_images(policy, batch, seed):
    out = policy.augment_batch(batch, np.random.default_rng(seed))
    assert out.shape == batch.shape and out.dtype == np.uint8
    assert 0 <= int(out.min()) and int(out.max()) <= 255
    single = policy(batch[0], np.random.default_rng(seed))
    assert single.shape == batch[0].shape and single.dtype == np.uint8


@FUZZ
@given(cfg=valid_policy, batch=images(), seed=st.integers(0, 2**32 - 1))
def test_valid_policy_keeps_shape_dtype_and_range(cfg, batch, seed):
    # As config.validate builds it when the image size is not known yet, then as run() does with the data's shape.
    assert_keeps_images(augment.build(cfg), batch, seed)
    assert_keeps_images(augment.build(cfg, image_shape=batch.shape[1:]), batch, seed)


# ---------------------------------------------------------------------------------------------- invalid values

def reversed_interval(low, high, integers=False):
    values = st.integers(low, high) if integers else floats(low, high)
    return st.tuples(values, values).filter(lambda v: v[0] != v[1]).map(lambda v: sorted(v, reverse=True))


wrong_type = st.text(max_size=5) | st.booleans() | st.none() | st.just([1, 2, 3])
bad_probability = floats(-10, -1e-6) | floats(1 + 1e-6, 10) | st.just(math.nan) | wrong_type

INVALID_ARGS = {
    "Rotate": {"limit": reversed_interval(-180, 180) | st.text(min_size=1, max_size=5) | st.booleans()},
    "Affine": {"scale": reversed_interval(0.5, 1.5) | floats(-2, 0) | st.text(min_size=1, max_size=5),
               "translate_percent": reversed_interval(-0.3, 0.3) | st.text(min_size=1, max_size=5)},
    "RandomBrightnessContrast": {"brightness_limit": reversed_interval(-1, 1) | st.booleans(),
                                 "contrast_limit": reversed_interval(-1, 1) | st.text(min_size=1, max_size=5)},
    "GaussNoise": {"std_range": reversed_interval(0, 1) | interval(1.01, 5) | interval(-5, -0.01)},
    "CoarseDropout": {"num_holes_range": reversed_interval(1, 6, integers=True) | interval(-5, 0, integers=True),
                      "hole_height_range": reversed_interval(0.05, 0.5),
                      "hole_width_range": interval(2, 8, integers=True)},  # pixels while the height is fractions
    "CoarseDropout#pixels": {"hole_width_range": interval(0.05, 0.5)},  # fractions while the height is pixels
    "RandomResizedCrop": {"scale": reversed_interval(0.08, 1.0) | interval(1.01, 3),
                          "ratio": reversed_interval(0.5, 2.0) | interval(-3, -0.01)},
    "HorizontalFlip": {},
}
IDG_INVALID = {
    "rotation_range": floats(-180, -1e-3) | wrong_type,
    "width_shift_range": floats(-1, -1e-3) | wrong_type,
    "shear_range": floats(-45, -1e-3) | st.text(max_size=3),
    "zoom_range": reversed_interval(0.5, 1.5) | floats(1, 5) | floats(-1, -1e-3) | st.text(max_size=3),
    "horizontal_flip": st.integers() | st.text(max_size=3) | st.none(),
    "brightness_range": reversed_interval(0.2, 1.8) | floats(0, 2) | interval(-2, -0.01),
    "channel_shift_range": floats(-100, -1e-3) | st.booleans(),
    "fill_mode": st.text(max_size=8).filter(lambda v: v not in augment.FILL_MODES) | st.integers(),
    "cval": st.text(max_size=3) | st.just(math.inf),
}


@st.composite
def one_bad_transform(draw):
    """(policy, the key the error must name): a valid policy with one argument of one transform made invalid."""
    name = draw(st.sampled_from(sorted(VALID_ARGS)))
    item = dict(draw(transform(name)))
    arg = draw(st.sampled_from(sorted({*INVALID_ARGS[name], "p"})))
    item[arg] = plain(draw(INVALID_ARGS[name].get(arg, bad_probability)))
    before = draw(st.lists(leaf, max_size=2))
    index = len(before)
    if draw(st.booleans()):  # inside a composition: the key goes down the nesting
        # (A OneOf whose only transform has p: 0 is an error of its own, tested below.)
        kind = "Sequential" if item.get("p") == 0 else draw(st.sampled_from(["OneOf", "Sequential"]))
        item = {"_target_": f"albumentations.{kind}", "transforms": [item]}
        key = f"augmentation.transforms[{index}].transforms[0]"
    else:
        key = f"augmentation.transforms[{index}]"
    return {"name": "fuzz", "transforms": [*before, item]}, key, arg


@FUZZ
@given(case=one_bad_transform())
def test_invalid_transform_argument_is_a_one_line_error_naming_it(case):
    cfg, key, arg = case
    with pytest.raises(PolicyError) as info:
        augment.build(cfg)
    message = str(info.value)
    assert message.startswith(key) and "\n" not in message, (cfg, message)
    assert arg in message or "p" == arg, message


@st.composite
def one_bad_idg_key(draw):
    idg = dict(draw(st.fixed_dictionaries({}, optional=IDG_VALID).map(plain)))
    key = draw(st.sampled_from(sorted(IDG_INVALID)))
    idg[key] = plain(draw(IDG_INVALID[key]))
    return {"name": "fuzz", "idg": idg}, f"augmentation.idg.{key}"


@FUZZ
@given(case=one_bad_idg_key())
def test_invalid_idg_setting_is_a_one_line_error_naming_it(case):
    cfg, key = case
    with pytest.raises(PolicyError) as info:
        augment.build(cfg)
    message = str(info.value)
    assert message.startswith(f"{key}: ") and "\n" not in message, (cfg, message)


@FUZZ
@given(children=st.lists(leaf.map(lambda item: {**item, "p": 0.0}), min_size=1, max_size=3), p=probability)
def test_one_of_whose_transforms_all_have_p_zero_is_an_error(children, p):
    with pytest.raises(PolicyError, match=r"^augmentation\.transforms\[0\]\.transforms: .*none can be chosen"):
        augment.build({"name": "fuzz", "transforms": [{"_target_": "albumentations.OneOf", "transforms": children,
                                                        "p": p}]})


# ---------------------------------------------------------------------------------------------- anything at all

anything = (st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats() | st.text(max_size=6)
            | st.lists(st.integers(-50, 50) | st.floats(-50, 50), max_size=4))


@st.composite
def junk_transform(draw):
    name = draw(st.sampled_from(sorted(VALID_ARGS)))
    args = sorted({*VALID_ARGS[name], "p"})
    chosen = draw(st.lists(st.sampled_from(args), unique=True, max_size=3))
    return {"_target_": target(name), **{a: draw(anything) for a in chosen}}


@FUZZ
@given(item=junk_transform(), batch=images())
def test_any_argument_values_give_a_policy_error_or_a_working_policy(item, batch):
    """Never a TypeError, an OverflowError or a crash in the middle of an epoch: either the config error before
    training, or a policy that works on every image of the data's shape."""
    cfg = {"name": "fuzz", "transforms": [item]}
    try:
        policy = augment.build(cfg, image_shape=batch.shape[1:])
    except PolicyError as exc:
        assert str(exc).startswith("augmentation.transforms[0]") and "\n" not in str(exc)
        return
    for seed in range(3):
        assert_keeps_images(policy, batch, seed)


# ---------------------------------------------------------------------------------------------- through validate

@pytest.mark.parametrize("overrides, key", [
    (["augmentation=idg_classic", "augmentation.idg.zoom_range=[1.5,0.5]"], "augmentation.idg.zoom_range"),
    (["augmentation=idg_classic", "augmentation.idg.horizontal_flip=1"], "augmentation.idg.horizontal_flip"),
    (["augmentation=rotate", "augmentation.transforms.0.limit=[30,-30]"], "augmentation.transforms[0].limit"),
    (["augmentation=rotate", "augmentation.transforms.0.p=-0.5"], "augmentation.transforms[0].p"),
    (["augmentation=noise", "augmentation.transforms.0.std_range=[0.5,0.1]"], "augmentation.transforms[0].std_range"),
])
def test_config_validate_reports_the_bad_policy_before_anything_runs(make_cfg, overrides, key):
    cfg = make_cfg(*overrides)
    with pytest.raises(PolicyError) as info:
        config.validate(cfg)
    assert str(info.value).startswith(f"{key}: ") and config.user_error(info.value)

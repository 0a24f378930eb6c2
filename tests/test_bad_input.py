"""Bad input never costs a run: each bad case is built on disk, and each gives either one line naming the file and
what is wrong before training starts, or (dataset.on_bad_image=skip) a counted, listed skip. Also the safety of what
a config or a data file can make the program do (no pickles, safe YAML, policy targets restricted)."""
import ast
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from PIL import Image

from ablation import augment, datasets
from ablation.augment import PolicyError
from ablation.datasets import DataError
from ablation.training import config
from ablation.training.run import run
from conftest import ROOT

CLASSES = ("cat", "dog", "owl")
COLOURS = {"cat": (200, 30, 30), "dog": (30, 200, 30), "owl": (30, 30, 200)}


@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("ABLATION_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def good_folder(root, per_class=6, classes=CLASSES):
    """root/<class>/<i>.png, each class one solid colour, so a loaded pixel tells the class it came from."""
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.new("RGB", (12, 10), COLOURS[name]).save(root / name / f"{i}.png")
    return root


def truncated_jpeg(path):
    # Noise, so the entropy-coded data is long and half the file lacks most of it.
    pixels = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    data = cv2.imencode(".jpg", pixels)[1].tobytes()
    path.write_bytes(data[: len(data) // 2])


def truncated_png(path):
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def empty_file(path):
    path.write_bytes(b"")


def not_an_image(path):
    path.write_text("filename,label\ncat1.jpg,cat\n")


BAD = {  # kind -> (file name, writer, words the reason contains)
    "truncated jpeg": ("broken.jpg", truncated_jpeg, "truncated JPEG"),
    "truncated png": ("broken.png", truncated_png, "truncated PNG"),
    "empty file": ("empty.jpg", empty_file, "empty file"),
    "text named .jpg": ("notes.jpg", not_an_image, "not an image"),
    "html named .png": ("page.png", lambda p: p.write_text("<html><body>404</body></html>"), "not an image"),
}


def folder_cfg(make_cfg, root, *extra):
    return make_cfg("dataset=folder", f"dataset.path={root}", "dataset.image_size=8", *extra).dataset


# ------------------------------------------------------------------------------------------ error mode


@pytest.mark.parametrize("cache", ["true", "false"])
@pytest.mark.parametrize("kind", list(BAD))
def test_a_bad_image_stops_the_load_with_one_line_naming_it(make_cfg, tmp_path, kind, cache):
    root = good_folder(tmp_path / "d")
    name, write, words = BAD[kind]
    bad = root / "dog" / name
    write(bad)
    with pytest.raises(DataError) as err:
        datasets.load(folder_cfg(make_cfg, root, f"dataset.cache={cache}"))
    message = str(err.value)
    assert message.startswith(f"dataset.path: {bad}: cannot decode image (") and words in message, message
    assert "dataset.on_bad_image=skip" in message and "\n" not in message


def test_a_bad_image_in_validation_is_found_before_training(make_cfg, tmp_path):
    root = tmp_path / "d"
    good_folder(root / "train")
    good_folder(root / "validation", per_class=2)
    bad = root / "validation" / "owl" / "broken.jpg"
    truncated_jpeg(bad)
    with pytest.raises(DataError, match=f"{bad}: cannot decode image \\(truncated JPEG\\)"):
        datasets.load(folder_cfg(make_cfg, root))


def test_a_run_on_bad_data_stops_before_any_mlflow_run(make_cfg, tmp_path):
    root = good_folder(tmp_path / "d")
    empty_file(root / "cat" / "zero.png")
    cfg = make_cfg("dataset=folder", f"dataset.path={root}", "dataset.image_size=8")
    with pytest.raises(DataError, match="zero.png: cannot decode image \\(empty file"):
        run(cfg)
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    assert not client.search_runs([e.experiment_id for e in client.search_experiments()])


# ------------------------------------------------------------------------------------------ skip mode


def folder_with_bad_files(root):
    """18 good images and one bad file of each kind, spread over the classes: {bad file: reason words}."""
    good_folder(root)
    expected = {}
    for i, (name, write, words) in enumerate(BAD.values()):
        path = root / CLASSES[i % len(CLASSES)] / name
        write(path)
        expected[str(path.resolve())] = words
    return expected


def assert_only_good_rows(splits):
    for split in (splits.train, splits.val, splits.test):
        assert len(split.x) == len(split.y)
        for image, label in zip(split.x, split.y):  # every row a decoded good image of its own class
            assert tuple(image[0, 0]) == COLOURS[splits.class_names[label]]


def test_skip_leaves_bad_files_out_counts_and_lists_them_and_the_cache_keeps_the_list(make_cfg, tmp_path):
    expected = folder_with_bad_files(tmp_path / "d")
    cfg = folder_cfg(make_cfg, tmp_path / "d", "dataset.on_bad_image=skip", "dataset.validation_split=0.2",
                     "dataset.test_split=0.2")
    first = datasets.load(cfg)
    assert len(first.skipped) == len(BAD)
    assert {file for file, _ in first.skipped} == set(expected)
    for file, reason in first.skipped:
        assert expected[file] in reason
    assert sum(len(s) for s in (first.train, first.val, first.test)) == 18
    assert_only_good_rows(first)

    again = datasets.load(cfg)  # from the cache: memory-mapped, the same skip list
    assert isinstance(again.train.x, np.memmap)
    assert again.skipped == first.skipped
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(again, name).x, getattr(first, name).x)
        np.testing.assert_array_equal(getattr(again, name).y, getattr(first, name).y)
    meta = json.loads((datasets.cache_path(cfg) / "meta.json").read_text())
    assert len(meta["skipped"]) == len(BAD)

    uncached = datasets.load(folder_cfg(make_cfg, tmp_path / "d", "dataset.on_bad_image=skip", "dataset.cache=false"))
    assert uncached.skipped == first.skipped
    np.testing.assert_array_equal(uncached.train.x, first.train.x)


def test_skip_with_every_file_of_one_class_bad_is_an_error_naming_the_class(make_cfg, tmp_path):
    root = good_folder(tmp_path / "d", classes=("cat", "dog"))
    owl = root / "owl"
    owl.mkdir()
    for i in range(4):
        truncated_jpeg(owl / f"{i}.jpg")
    with pytest.raises(DataError, match="class 'owl' has no readable training images left after skipping"):
        datasets.load(folder_cfg(make_cfg, root, "dataset.on_bad_image=skip", "dataset.validation_split=0",
                                 "dataset.test_split=0"))


def test_on_bad_image_setting_is_checked(make_cfg, tmp_path):
    good_folder(tmp_path / "d")
    with pytest.raises(DataError, match=r"^dataset\.on_bad_image: expected one of error\|skip, got 'ignore'$"):
        datasets.check(folder_cfg(make_cfg, tmp_path / "d", "dataset.on_bad_image=ignore"))


# ------------------------------------------------------------------------------------------ csv tables


def table_with_bad_files(root):
    """root/labels.csv naming the 18 good images of good_folder(root / "images") and, on lines 3 and 8, a truncated
    PNG and a text file saved as .png: (table, {absolute bad file: how its reason starts, its line first})."""
    good_folder(root / "images")
    rows = [(f"images/{name}/{i}.png", name) for name in CLASSES for i in range(6)]
    bad = {3: ("images/dog/broken.png", "dog", truncated_png, "truncated PNG"),
           8: ("images/owl/notes.png", "owl", not_an_image, "not an image")}
    expected = {}
    for line, (file, label, write, words) in sorted(bad.items()):
        write(root / file)
        rows.insert(line - 2, (file, label))  # the header is line 1
        expected[str((root / file).resolve())] = f"labels.csv line {line}: {words}"
    table = root / "labels.csv"
    table.write_text("".join(f"{file},{label}\n" for file, label in [("filename", "class"), *rows]))
    return table, expected


def csv_cfg(make_cfg, table, *extra):
    return make_cfg("dataset=csv", f"dataset.path={table}", "dataset.image_size=8", *extra).dataset


@pytest.mark.parametrize("cache", ["true", "false"])
def test_a_bad_image_in_a_table_stops_the_load_naming_the_line_and_the_file(make_cfg, tmp_path, cache):
    table, _ = table_with_bad_files(tmp_path / "t")
    # Every row in train, decoded in table order: the first bad row is the one reported.
    cfg = csv_cfg(make_cfg, table, "dataset.validation_split=0", "dataset.test_split=0", f"dataset.cache={cache}")
    with pytest.raises(DataError) as err:
        datasets.load(cfg)
    message = str(err.value)
    bad = tmp_path / "t" / "images" / "dog" / "broken.png"
    assert message.startswith(f"dataset.path: {table} line 3: image file {bad}: cannot decode image (truncated PNG)")
    assert "dataset.on_bad_image=skip" in message and "\n" not in message


def test_skip_leaves_bad_rows_of_a_table_out_counts_and_lists_them_with_their_lines(make_cfg, tmp_path):
    table, expected = table_with_bad_files(tmp_path / "t")
    cfg = csv_cfg(make_cfg, table, "dataset.on_bad_image=skip")
    splits = datasets.load(cfg)
    assert len(splits.skipped) == 2 and {file for file, _ in splits.skipped} == set(expected)
    for file, reason in splits.skipped:
        assert reason.startswith(expected[file]), reason
    assert sum(len(s) for s in (splits.train, splits.val, splits.test)) == 18
    assert_only_good_rows(splits)
    again = datasets.load(cfg)  # from the cache: the same rows and the same skip list
    assert isinstance(again.train.x, np.memmap) and again.skipped == splits.skipped
    np.testing.assert_array_equal(again.train.x, splits.train.x)
    # error and skip give different arrays, so they are cached apart
    assert datasets.cache_key(cfg) != datasets.cache_key(csv_cfg(make_cfg, table))
    with pytest.raises(DataError, match=r"^dataset\.on_bad_image: expected one of error\|skip, got 'ignore'$"):
        datasets.check(csv_cfg(make_cfg, table, "dataset.on_bad_image=ignore"))


# ------------------------------------------------------------------------------------------ files that are not data


def test_other_files_and_hidden_files_in_class_folders_are_not_read(make_cfg, tmp_path):
    root = good_folder(tmp_path / "d", per_class=3)
    (root / "cat" / "labels.txt").write_text("not an image")
    (root / "dog" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1" + bytes(100))
    (root / "dog" / "Thumbs.db").write_bytes(bytes(64))
    (root / "owl" / "._0.png").write_bytes(b"\0\5\26\7AppleDouble resource fork")  # macOS copy with an image name
    (root / "owl" / ".ipynb_checkpoints").mkdir()
    (root / "owl" / ".ipynb_checkpoints" / "x.png").write_text("checkpoint")
    (root / ".git").mkdir()  # a hidden folder beside the classes is not a class
    (root / ".git" / "HEAD").write_text("ref")
    splits = datasets.load(folder_cfg(make_cfg, root, "dataset.validation_split=0", "dataset.test_split=0"))
    assert splits.class_names == list(CLASSES) and len(splits.train) == 9 and splits.skipped == ()
    assert_only_good_rows(splits)


# ------------------------------------------------------------------------------------------ modes and channels


def write_modes(root):
    """One class folder per kind of file, each holding one solid image: {class: expected RGB}."""
    def save(name, image, ext="png", **kw):
        (root / name).mkdir(parents=True)
        image.save(root / name / f"0.{ext}", **kw)

    save("rgb", Image.new("RGB", (11, 9), (10, 20, 30)))
    save("gray", Image.new("L", (11, 9), 77))
    save("rgba", Image.new("RGBA", (11, 9), (200, 100, 50, 0)))  # fully transparent: the colour is kept
    save("gray_alpha", Image.new("LA", (11, 9), (90, 128)))
    save("palette", Image.new("RGB", (11, 9), (0, 128, 255)).convert("P", palette=Image.Palette.ADAPTIVE))
    save("bilevel", Image.new("1", (11, 9), 1), ext="bmp")
    save("gray16", Image.fromarray(np.full((9, 11), 123 * 257, np.uint16)))
    (root / "rgb16").mkdir()
    colour16 = np.zeros((9, 11, 3), np.uint16)
    colour16[...] = (65535, 32896, 0)  # 16 bits per channel: (255, 128, 0) in 8
    cv2.imwrite(str(root / "rgb16" / "0.png"), colour16[..., ::-1])  # OpenCV writes BGR
    for name, cmyk in {"cmyk_cyan": (255, 0, 0, 0), "cmyk_magenta": (0, 255, 0, 0), "cmyk_yellow": (0, 0, 255, 0),
                       "cmyk_black": (0, 0, 0, 255)}.items():
        save(name, Image.new("CMYK", (11, 9), cmyk), ext="jpg", quality=95)
    return {"rgb": (10, 20, 30), "gray": (77, 77, 77), "rgba": (200, 100, 50), "gray_alpha": (90, 90, 90),
            "palette": (0, 128, 255), "bilevel": (255, 255, 255), "gray16": (123, 123, 123), "rgb16": (255, 128, 0),
            "cmyk_cyan": (0, 255, 255), "cmyk_magenta": (255, 0, 255), "cmyk_yellow": (255, 255, 0),
            "cmyk_black": (0, 0, 0)}


def test_mixed_modes_convert_to_the_configured_channels(make_cfg, tmp_path):
    expected = write_modes(tmp_path / "d")
    loaded = {}
    for channels in (3, 1):
        splits = datasets.load(folder_cfg(make_cfg, tmp_path / "d", f"dataset.channels={channels}",
                                          "dataset.validation_split=0", "dataset.test_split=0"))
        assert splits.input_shape == (8, 8, channels) and sorted(splits.class_names) == sorted(expected)
        loaded[channels] = {splits.class_names[label]: image for image, label in zip(splits.train.x, splits.train.y)}
    for name, rgb in expected.items():
        colour = loaded[3][name]
        assert (colour == colour[0, 0]).all(), name  # a solid image stays solid
        tolerance = 4 if name.startswith("cmyk") else 1  # JPEG
        np.testing.assert_allclose(colour[0, 0], rgb, atol=tolerance, err_msg=name)
        luma = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]  # ITU-R 601, as PIL's "L"
        assert abs(int(loaded[1][name][0, 0, 0]) - luma) <= tolerance + 1, name


# ------------------------------------------------------------------------------------------ layout problems


@pytest.mark.parametrize("make_tree, blamed, words", [
    (lambda r: (good_folder(r), (r / "yak").mkdir()), "yak", "empty class folder"),
    (lambda r: (good_folder(r / "train"), good_folder(r / "validation", per_class=1), (r / "validation" / "emu").mkdir()),
     "validation/emu", "empty class folder"),
    (lambda r: (good_folder(r / "train"), good_folder(r / "validation", per_class=1, classes=("cat", "dog")),
                good_folder(r / "validation", per_class=1, classes=("owl",)),
                Image.new("RGB", (4, 4)).save(_mkdir(r / "validation" / "emu") / "0.png")),
     "validation/emu", "class 'emu' has no images in"),
])
def test_class_folder_problems_name_the_folder(make_cfg, tmp_path, make_tree, blamed, words):
    root = tmp_path / "d"
    make_tree(root)
    with pytest.raises(DataError) as err:
        datasets.load(folder_cfg(make_cfg, root))
    message = str(err.value)
    assert message.startswith(f"dataset.path: {root / blamed}") and words in message and "\n" not in message


def _mkdir(path):
    path.mkdir(parents=True)
    return path


def test_label_indices_are_fixed_by_train_even_when_validation_lacks_a_class(make_cfg, tmp_path):
    root = tmp_path / "d"
    good_folder(root / "train")
    good_folder(root / "validation", per_class=2, classes=("dog", "owl"))  # no cat: dog must stay 1, owl 2
    splits = datasets.load(folder_cfg(make_cfg, root, "dataset.test_split=0"))
    assert splits.class_names == ["cat", "dog", "owl"]
    assert sorted(set(splits.val.y.tolist())) == [1, 2]
    assert_only_good_rows(splits)


def test_a_dataset_folder_that_does_not_exist_is_reported_by_validate(make_cfg, tmp_path):
    cfg = make_cfg("dataset=folder", f"dataset.path={tmp_path / 'nowhere'}")
    with pytest.raises(DataError) as err:
        config.validate(cfg)
    assert str(err.value) == f"dataset.path: folder {tmp_path / 'nowhere'} does not exist"


# ------------------------------------------------------------------------------------------ npz


def npz(tmp_path, **arrays):
    file = tmp_path / "bad.npz"
    base = {"x_train": np.zeros((6, 8, 8), np.uint8), "y_train": np.arange(6) % 3}
    np.savez(file, **{**base, **arrays})
    return file


@pytest.mark.parametrize("arrays, words", [
    (dict(class_names=np.array(["a", "b"])), "y_train: labels go up to 2 but class_names has 2 names (labels must be 0..1)"),
    (dict(x_val=np.zeros((2, 8, 8), np.uint8), y_val=np.array([0, 7]), class_names=np.array(["a", "b", "c"])),
     "y_val: labels go up to 7 but class_names has 3 names"),
    (dict(y_train=np.eye(5)[np.arange(6) % 5], class_names=np.array(["a", "b", "c"])),
     "y_train: labels go up to 4 but class_names has 3 names"),
    (dict(y_train=np.array([0, 1, -1, 2, 0, 1])), "y_train: labels must be >= 0, found -1 at row 2"),
    (dict(y_train=np.arange(7) % 3), "y_train has 7 labels for 6 images"),
    (dict(x_test=np.zeros((3, 8, 8), np.uint8), y_test=np.arange(2)), "y_test has 2 labels for 3 images"),
    (dict(y_train=np.array([0, 1, 2, np.nan, 0, 1])), "y_train: labels must be finite, found nan at row 3"),
    (dict(y_train=np.array([0.0, 1, 2, np.inf, 0, 1])), "y_train: labels must be finite, found inf at row 3"),
    (dict(y_train=np.array([[1, 0], [0, 1], [0, 0], [1, 0], [0, 1], [1, 0]])), "y_train: one-hot row 2 has no positive"),
    (dict(y_train=np.array(["a", "b", "c", "a", "b", "c"])), "y_train: expected integer labels (N,) or one-hot"),
    (dict(x_train=np.array([None] * 6, dtype=object)), "x_train: cannot read (Object arrays cannot be loaded"),
])
def test_npz_label_problems_name_the_array(make_cfg, tmp_path, arrays, words):
    file = npz(tmp_path, **arrays)
    with pytest.raises(DataError) as err:
        datasets.load(make_cfg("dataset=npz", f"dataset.path={file}").dataset)
    message = str(err.value)
    assert message.startswith(f"dataset.path: {file}: ") and words in message and "\n" not in message, message


def test_npz_pickled_objects_are_never_unpickled(make_cfg, tmp_path):
    """An object array in an .npz is a pickle: loading it would run code chosen by whoever wrote the file."""
    class Payload:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    file = tmp_path / "evil.npz"
    np.savez(file, x_train=np.zeros((6, 8, 8), np.uint8), y_train=np.array([Payload()] * 6, dtype=object))
    with pytest.raises(DataError, match="y_train: cannot read"):
        datasets.load(make_cfg("dataset=npz", f"dataset.path={file}").dataset)
    assert not (tmp_path / "pwned").exists()


# ------------------------------------------------------------------------------------------ recorded in the run


def test_run_records_skipped_images_and_the_label_mapping(make_cfg, tmp_path):
    expected = folder_with_bad_files(tmp_path / "d")
    cfg = make_cfg("dataset=folder", f"dataset.path={tmp_path / 'd'}", "dataset.image_size=8",
                   "dataset.on_bad_image=skip", "trainer.epochs=1")
    result = run(cfg)
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    mlrun = client.get_run(result["run_id"])
    assert mlrun.info.status == "FINISHED" and mlrun.data.metrics["data/skipped_images"] == len(BAD)
    names = {a.path for a in client.list_artifacts(result["run_id"])}
    assert {"labels.json", "skipped_images.csv"} <= names
    folder = Path(client.download_artifacts(result["run_id"], "", str(tmp_path / "got")))
    assert json.loads((folder / "labels.json").read_text()) == {
        "class_names": list(CLASSES), "class_indices": {"cat": 0, "dog": 1, "owl": 2}}
    rows = (folder / "skipped_images.csv").read_text().splitlines()
    assert rows[0] == "file,reason" and len(rows) == 1 + len(BAD)
    assert {row.split(",")[0] for row in rows[1:]} == set(expected)


def test_run_on_a_table_records_its_skipped_rows(make_cfg, tmp_path):
    table, expected = table_with_bad_files(tmp_path / "t")
    cfg = make_cfg("dataset=csv", f"dataset.path={table}", "dataset.image_size=8", "dataset.on_bad_image=skip",
                   "trainer.epochs=1")
    result = run(cfg)
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    mlrun = client.get_run(result["run_id"])
    assert mlrun.info.status == "FINISHED" and mlrun.data.metrics["data/skipped_images"] == len(expected)
    assert mlrun.data.params["dataset.on_bad_image"] == "skip"
    listed = pd.read_csv(client.download_artifacts(result["run_id"], "skipped_images.csv", str(tmp_path / "got")))
    assert list(listed.columns) == ["file", "reason"] and set(listed.file) == set(expected)
    for file, reason in zip(listed.file, listed.reason):
        assert reason.startswith(expected[file]), reason


def test_run_without_skips_logs_zero_and_the_label_mapping(make_cfg, tmp_path):
    cfg = make_cfg("dataset.train_size=48", "trainer.epochs=1")  # digits
    result = run(cfg)
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    mlrun = client.get_run(result["run_id"])
    assert mlrun.data.metrics["data/skipped_images"] == 0
    names = {a.path for a in client.list_artifacts(result["run_id"])}
    assert "labels.json" in names and "skipped_images.csv" not in names
    labels = json.loads(Path(client.download_artifacts(result["run_id"], "labels.json", str(tmp_path))).read_text())
    assert labels["class_names"] == [str(i) for i in range(10)] and labels["class_indices"]["7"] == 7


# ------------------------------------------------------------------------------------------ security


def package_calls():
    """(file, ast.Call) for every call in the package's own code."""
    for file in sorted((ROOT / "ablation").rglob("*.py")) + sorted((ROOT / "hydra_plugins").rglob("*.py")):
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            if isinstance(node, ast.Call):
                yield file, node


def dotted(node) -> str:
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else "?"


def test_every_np_load_refuses_pickles():
    loads = [(file, call) for file, call in package_calls() if dotted(call.func) in ("np.load", "numpy.load")]
    assert loads, "expected the dataset loaders' np.load calls"
    for file, call in loads:
        flags = {k.arg: k.value for k in call.keywords}
        assert isinstance(flags.get("allow_pickle"), ast.Constant) and flags["allow_pickle"].value is False, \
            f"{file.name}:{call.lineno}: np.load without allow_pickle=False"


def test_yaml_is_read_only_by_safe_loaders(tmp_path):
    unsafe = {"yaml.load", "yaml.unsafe_load", "yaml.full_load", "yaml.load_all", "yaml.unsafe_load_all",
              "pickle.load", "pickle.loads", "torch.load", "joblib.load", "eval", "exec"}
    found = [f"{file.name}:{call.lineno}: {dotted(call.func)}" for file, call in package_calls()
             if dotted(call.func) in unsafe]
    assert not found, found
    # Config files are read by OmegaConf (Hydra's reader): a YAML tag that would construct a Python object is refused.
    evil = tmp_path / "policy.yaml"
    evil.write_text(f"name: evil\ntransforms: !!python/object/apply:pathlib.Path.touch [{tmp_path / 'pwned'}]\n")
    with pytest.raises(Exception, match="python/object/apply"):
        OmegaConf.load(evil)
    assert not (tmp_path / "pwned").exists()


OUTSIDE = ["os.system", "builtins.eval", "subprocess.Popen", "this.s", "keras.layers.Lambda", "keras.layers.RandomFlip",
           "albumentations.Lambda", "albumentations.BasicTransform", "ablation.training.run.run", "ablation.datasets.Split",
           "albumentations.core.composition.Compose", "albumentations.augmentations.transforms.np.load"]
NESTINGS = {
    "top level": (lambda t: [t], "augmentation.transforms[0]"),
    "OneOf": (lambda t: [{"_target_": "albumentations.OneOf", "transforms": [{"_target_": "albumentations.Blur"}, t]}],
              "augmentation.transforms[0].transforms[1]"),
    "SomeOf in Sequential": (lambda t: [{"_target_": "albumentations.HorizontalFlip"}, {
        "_target_": "albumentations.Sequential", "transforms": [{
            "_target_": "albumentations.SomeOf", "n": 1, "transforms": [t]}]}],
        "augmentation.transforms[1].transforms[0].transforms[0]"),
}


@pytest.mark.parametrize("nesting", list(NESTINGS))
@pytest.mark.parametrize("target", OUTSIDE)
def test_policy_targets_cannot_name_other_code(target, nesting):
    imported_before = set(sys.modules)
    wrap, key = NESTINGS[nesting]
    with pytest.raises(PolicyError) as err:
        augment.build({"name": "evil", "transforms": wrap({"_target_": target})})
    message = str(err.value)
    assert message.startswith(f"{key}._target_: ") and target in message and "\n" not in message
    assert "this" in imported_before or "this" not in sys.modules  # `import this` prints; it was never imported


@pytest.mark.parametrize("target", ["keras.layers.Lambda", "os.system", "albumentations.Lambda"])
def test_device_policies_are_vetted_the_same_before_anything_runs(make_cfg, target):
    cfg = make_cfg("augmentation=hflip", "augmentation.placement=device")
    OmegaConf.update(cfg, "augmentation.transforms", [
        {"_target_": "albumentations.OneOf", "transforms": [{"_target_": "albumentations.HorizontalFlip"},
                                                            {"_target_": target}]}], force_add=True)
    with pytest.raises(PolicyError) as err:
        config.validate(cfg)
    assert str(err.value).startswith("augmentation.transforms[0].transforms[1]._target_: ")


def test_policy_arguments_are_data_not_code():
    """A string where albumentations expects a function is refused, never looked up or called."""
    with pytest.raises(PolicyError, match=r"^augmentation\.transforms\[0\]\.read_fn: "):
        augment.build({"name": "evil", "transforms": [{"_target_": "albumentations.FDA",
                                                       "reference_images": [np.zeros((4, 4, 3)).tolist()],
                                                       "read_fn": "os.system"}]})

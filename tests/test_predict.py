"""python -m ablation.cli.predict: a real logged model (tiny digits and two-class shapes runs, a hand-built
image-to-image model) applied to a folder of PNGs, read back from a real (temporary) MLflow store."""
import json
import subprocess
import sys

import keras
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from ablation import datasets, tracking
from ablation.cli import predict
from ablation.training.run import run
from conftest import ROOT, compose_config, store_overrides

FILES = ["a.png", "b-c/x.png", "b/0.png", "b/c/deep.png", "b/c/z.bmp", "z.jpg"]


def _compose(store, *overrides):
    """make_cfg's composition for the module's shared store (a module-scoped fixture cannot take make_cfg)."""
    return compose_config("trainer.epochs=1", "lenses=off", *overrides, *store_overrides(store))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One store holding a 10-class digits run, a two-class (sigmoid) shapes run, a run trained with
    tracking.log_model=false and a run whose model is a hand-built image-to-image model."""
    root = tmp_path_factory.mktemp("store")
    digits_cfg = _compose(root, "dataset.train_size=40")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("ABLATION_CACHE_DIR", str(root / "cache"))
        runs = {"digits": run(digits_cfg)["run_id"]}
        runs["binary"] = run(_compose(root, "dataset=shapes", "dataset.classes=[circle,square]",
                                      "dataset.image_size=16", "dataset.n_train=32", "dataset.n_val=16",
                                      "dataset.n_test=16"))["run_id"]
        runs["no_model"] = run(_compose(root, "dataset.train_size=20", "tracking.log_model=false", "seed=1"))["run_id"]
    runs["image"] = _log_identity_model(digits_cfg, root)
    return digits_cfg.tracking, runs


def _log_identity_model(cfg, root):
    """An image-to-image model in the logged format (uint8 input -> Rescaling): its output is its input on [0, 1]."""
    inputs = keras.Input(shape=(16, 16, 3), dtype="uint8")
    model = keras.Model(inputs, keras.layers.Rescaling(1 / 255)(inputs))
    model.save(root / "model.keras")
    with tracking.run(cfg, "identity", {"model": "identity"}) as tracker:
        tracker.log_file(root / "model.keras")
    return tracker.run_id


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Digit PNGs (and a BMP and a JPEG) in nested folders, plus files that are not images."""
    folder = tmp_path_factory.mktemp("images")
    digits = load_digits()
    for i, name in enumerate(FILES):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((digits.images[i] * 255 / 16).astype(np.uint8)).convert("RGB").save(path)
    (folder / "notes.txt").write_text("not an image")
    (folder / "b" / ".hidden.png").write_bytes((folder / "a.png").read_bytes())
    return folder


def _labels(tracking_cfg, run_id, tmp_path):
    return json.loads(tracking.download(tracking_cfg, run_id, "labels.json", tmp_path).read_text())["class_names"]


def _check_classifier(table: pd.DataFrame, class_names):
    assert table["file"].tolist() == FILES  # every image, sorted by relative path, nothing else
    p = table[[f"p_{name}" for name in class_names]].to_numpy()
    assert list(table.columns) == ["file", "predicted", "probability", *[f"p_{n}" for n in class_names]]
    assert np.allclose(p.sum(axis=1), 1.0, atol=1e-5)
    assert ((p >= 0) & (p <= 1)).all()
    assert table["predicted"].tolist() == [class_names[i] for i in p.argmax(axis=1)]
    assert np.allclose(table["probability"], p.max(axis=1))


def test_classifier_predictions_match_the_model_on_the_training_decoding(store, images, tmp_path, capsys):
    tracking_cfg, runs = store
    csv = predict.predict(tracking_cfg, runs["digits"], images, out=tmp_path / "out.csv", batch_size=4)
    assert csv == tmp_path / "out.csv"
    table = pd.read_csv(csv, dtype={"predicted": str})
    class_names = _labels(tracking_cfg, runs["digits"], tmp_path / "labels")
    assert class_names == [str(i) for i in range(10)]
    _check_classifier(table, class_names)
    # The same probabilities as the logged model on images decoded by the folder loader's reader.
    model = keras.models.load_model(tracking.download(tracking_cfg, runs["digits"], "model.keras", tmp_path / "m"))
    x = np.stack([datasets.read_image(images / f, 32, "L") for f in FILES])
    expected = model.predict(x, verbose=0)
    assert np.allclose(table[[f"p_{n}" for n in class_names]].to_numpy(), expected, atol=1e-5)
    printed = capsys.readouterr().out
    assert f"predictions: {csv}" in printed
    for name, count in table["predicted"].value_counts().items():
        assert f"  {name}: {count}" in printed


def test_two_class_model_sigmoid_is_probability_of_class_one(store, images, tmp_path):
    tracking_cfg, runs = store
    table = pd.read_csv(predict.predict(tracking_cfg, runs["binary"], images, out=tmp_path))
    assert (tmp_path / "predictions.csv").exists()  # out= a folder
    _check_classifier(table, ["circle", "square"])
    model = keras.models.load_model(tracking.download(tracking_cfg, runs["binary"], "model.keras", tmp_path / "m"))
    x = np.stack([datasets.read_image(images / f, 16, "RGB") for f in FILES])
    assert np.allclose(table["p_square"], model.predict(x, verbose=0)[:, 0], atol=1e-5)


@pytest.mark.slow
def test_command_line_writes_the_same_predictions(store, images, tmp_path):
    tracking_cfg, runs = store
    expected = pd.read_csv(predict.predict(tracking_cfg, runs["digits"], images, out=tmp_path / "function.csv"))
    out = tmp_path / "cli.csv"
    done = subprocess.run([sys.executable, "-m", "ablation.cli.predict", f"run_id={runs['digits']}", f"data={images}",
                           f"out={out}", "batch_size=2", f"tracking.uri={tracking_cfg.uri}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"predictions: {out}" in done.stdout
    pd.testing.assert_frame_equal(pd.read_csv(out), expected, atol=1e-5)


def test_image_to_image_model_writes_png_outputs(store, images, tmp_path):
    tracking_cfg, runs = store
    (images_copy := tmp_path / "in").mkdir()
    for name in ("a.png", "a.jpg", "sub/b.png"):
        (images_copy / name).parent.mkdir(exist_ok=True)
        Image.open(images / "a.png").rotate(90 * len(name)).save(images_copy / name)
    table = pd.read_csv(predict.predict(tracking_cfg, runs["image"], images_copy, out=tmp_path / "out" / "p.csv"))
    # a.jpg and a.png would share a.png: both keep their whole name.
    assert table.to_dict("list") == {"file": ["a.jpg", "a.png", "sub/b.png"],
                                     "output": ["images/a.jpg.png", "images/a.png.png", "images/sub/b.png"]}
    for file, output in zip(table["file"], table["output"]):
        written = np.asarray(Image.open(tmp_path / "out" / output))
        # The identity model returns its input: the image as the reader decodes it for a 16x16 RGB model.
        assert np.array_equal(written, datasets.read_image(images_copy / file, 16, "RGB"))


def _fails(argv, capsys) -> str:
    assert predict.call(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_each_mistake_is_one_line(store, images, tmp_path, capsys):
    tracking_cfg, runs = store
    uri = f"tracking.uri={tracking_cfg.uri}"
    ok = [f"run_id={runs['digits']}", f"data={images}", f"out={tmp_path / 'p.csv'}", uri]
    assert "run_id: no run 'feedfacefeedfacefeedfacefeedface'" in _fails(
        ["run_id=feedfacefeedfacefeedfacefeedface", f"data={images}", uri], capsys)
    assert "run_id: no run 'not an id!'" in _fails(["run_id=not an id!", f"data={images}", uri], capsys)
    err = _fails([f"run_id={runs['no_model']}", f"data={images}", uri], capsys)
    assert f"run {runs['no_model']}" in err and "no model.keras" in err and "tracking.log_model=true" in err
    nowhere = tmp_path / "nowhere"
    assert f"data: folder {nowhere} does not exist" in _fails([*ok, f"data={nowhere}"], capsys)
    (empty := tmp_path / "empty").mkdir()
    (empty / "readme.txt").write_text("no images here")
    assert f"data: {empty} holds no images" in _fails([*ok, f"data={empty}"], capsys)
    assert "is a file" in _fails([*ok, f"data={images / 'a.png'}"], capsys)
    (broken := tmp_path / "broken").mkdir()
    Image.open(images / "a.png").save(broken / "good.png")
    (broken / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    err = _fails([*ok, f"data={broken}"], capsys)
    assert f"data: {broken / 'bad.png'}: cannot decode image (truncated PNG)" in err
    assert not (tmp_path / "p.csv").exists()  # nothing written by a failed prediction
    assert "run_id: required" in _fails([f"data={images}", uri], capsys)
    assert "data: required" in _fails([f"run_id={runs['digits']}", uri], capsys)
    assert "batch_size: expected an integer >= 1, got '0'" in _fails([*ok, "batch_size=0"], capsys)
    assert "tracking.nope" in _fails([*ok, "tracking.nope=1"], capsys)

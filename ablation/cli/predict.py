"""ablation-predict (run_id=ID | model_uri=models:/NAME/latest) data=FOLDER [out=FILE.csv|FOLDER] [batch_size=64]
[tracking.uri=...] (or python -m ablation.cli.predict; config: conf/predict.yaml): a logged model's predictions for every
image under a folder (recursively, sorted by relative path).

The model is loaded from MLflow: `model_uri=` any models:/ URI (a registered model's version or alias, or a logged
model's id), `run_id=` the MLflow Model that run logged (its model.keras artifact for runs recorded before runs
logged MLflow Models). Each image is decoded and resized by the folder loader's reader
(datasets.read_image), so it reaches the model exactly as a training image of a folder dataset did, without
augmentation (the model runs in inference mode, which also switches off in-model augmentation layers).

Classifiers: one CSV row per image with the predicted class (names from the run's labels.json), its probability
and one `p_<class>` column per class; a two-class model's single sigmoid unit is p(class 1).
Image-to-image models (the output has the input's height and width): one PNG per image under images/ beside the
CSV, at the image's relative path with the suffix .png, listed in the CSV's `output` column.
Default output: <paths.predictions>/<run_id>/predictions.csv. Other arguments are the usual overrides
(tracking.uri=..., tracking=server), so the run is looked up in the same store a run records to.
"""
from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
from omegaconf import DictConfig

from ablation import datasets, tracking
from ablation.cli.compose import renamed_refused
from ablation.core import guard, paths
from ablation.core.errors import ConfigError

log = logging.getLogger(__name__)

# This command's own settings (conf/predict.yaml); everything else is the run config's.
ARGUMENTS = ("run_id", "model_uri", "data", "out", "batch_size")
USAGE = ("usage: ablation-predict run_id=RUN_ID|model_uri=models:/NAME/latest data=FOLDER "
         "[out=FILE.csv|FOLDER] [batch_size=64] [tracking.uri=...]")
DEFAULT_BATCH_SIZE = 64
# Images decoded and predicted per round, so a folder larger than memory is never held whole.
CHUNK = 1024


def options(cfg) -> dict:
    """This command's own settings from its config (conf/predict.yaml), checked."""
    given = [key for key in ("run_id", "model_uri") if cfg.get(key) not in (None, "")]
    if not given:
        raise ConfigError(f"run_id: required (or model_uri=models:/NAME/latest); {USAGE.removeprefix('usage: ')}")
    if len(given) > 1:
        raise ConfigError("model_uri: give run_id=RUN_ID or model_uri=URI, not both")
    if cfg.get("data") in (None, ""):
        raise ConfigError(f"data: required; {USAGE.removeprefix('usage: ')}")
    size = cfg.get("batch_size", DEFAULT_BATCH_SIZE)
    if isinstance(size, bool) or not str(size).isdigit() or int(size) < 1:
        raise ConfigError(f"batch_size: expected an integer >= 1, got {str(size)!r}")
    return {"run_id": None if cfg.get("run_id") in (None, "") else str(cfg.run_id),
            "model_uri": None if cfg.get("model_uri") in (None, "") else str(cfg.model_uri), "data": str(cfg.data),
            "out": None if cfg.get("out") is None else str(cfg.out),
            "batch_size": int(size)}


def list_images(data) -> tuple[Path, list[Path]]:
    """(the folder, its image files sorted by relative path); the same files the folder loader would read."""
    root = Path(data).expanduser()
    if not root.exists():
        raise ConfigError(f"data: folder {root} does not exist")
    if not root.is_dir():
        raise ConfigError(f"data: {root} is a file; expected a folder of images")
    files = sorted(datasets.images_in(root), key=lambda p: p.relative_to(root).as_posix())
    if not files:
        raise ConfigError(f"data: {root} holds no images ({' '.join(datasets.IMAGE_EXTENSIONS)}, searched recursively)")
    return root, files


def output_csv(out, run_id: str) -> Path:
    if not out:
        return paths.folder("predictions") / run_id / "predictions.csv"
    path = Path(out).expanduser()
    return path if path.suffix.lower() == ".csv" else path / "predictions.csv"


def load_run(tracking_cfg, run_id: str | None, scratch: Path, model_uri: str | None = None):
    """(the model, its class names or None, the run that logged it) for run_id or a models:/ URI; one-line errors
    for an unknown run or model, or a run without a model."""
    import keras

    from ablation.augment import device  # noqa: F401  registers the in-model augmentation layers for loading

    if model_uri is not None:
        model, run_id = tracking.load_model(tracking_cfg, model_uri, scratch / "model")
    else:
        run = tracking.find_run(tracking_cfg, run_id)
        if run is None:
            raise ConfigError(f"run_id: no run {run_id!r} in the MLflow store {tracking.store(tracking_cfg)[0]} "
                              "(set tracking.uri to the store the run was recorded in)")
        logged = tracking.run_model_uri(tracking_cfg, run_id)
        if logged is not None:
            model, _ = tracking.load_model(tracking_cfg, logged, scratch / "model")
        else:  # a run recorded before runs logged MLflow Models
            model_file = tracking.download(tracking_cfg, run_id, "model.keras", scratch)
            if model_file is None:
                raise ConfigError(f"run_id: run {run_id} ({run.info.run_name}, {run.info.status}) has no logged model "
                                  "(no MLflow Model, no model.keras artifact); train it with tracking.log_model=true")
            model = keras.models.load_model(model_file, compile=False)
    labels = tracking.download(tracking_cfg, run_id, "labels.json", scratch) if run_id else None
    class_names = json.loads(labels.read_text())["class_names"] if labels is not None else None
    return model, class_names, run_id


def task_of(model, class_names: list[str] | None, run_id: str) -> tuple[str, list[str]]:
    """("classify", class names) or ("image", []), from the model's input and output shapes."""
    _, height, width, channels = model.input_shape
    if height != width or channels not in (1, 3):
        raise ConfigError(f"run_id: model {run_id} takes {height}x{width}x{channels} images; predictions need a "
                          "square 1- or 3-channel input")
    shape = tuple(model.output_shape)
    if len(shape) == 4 and shape[1:3] == (height, width):
        if shape[3] not in (1, 3):
            raise ConfigError(f"run_id: model {run_id} outputs {shape[3]}-channel images; only 1 or 3 can be "
                              "written as PNG")
        return "image", []
    if len(shape) != 2:
        raise ConfigError(f"run_id: model {run_id} output shape {shape} is neither class probabilities nor an image")
    count = 2 if shape[1] == 1 else shape[1]
    if class_names is None:
        log.warning("note: run %s has no labels.json; classes are named by their index", run_id)
        class_names = [str(i) for i in range(count)]
    if len(class_names) != count:
        raise ConfigError(f"run_id: run {run_id}'s labels.json names {len(class_names)} classes but the model "
                          f"predicts {count}")
    return "classify", list(class_names)


def decode(root: Path, files: list[Path], size: int, channels: int) -> np.ndarray:
    """The images as the folder loader decodes them (datasets.read_image, threaded); an unreadable one is an error."""
    x = np.empty((len(files), size, size, channels), np.uint8)
    bad = datasets.decode_into(x, files, size, channels, stop=False)
    if bad:
        i, reason = bad[0]
        more = f" ({len(bad) - 1} more unreadable)" if len(bad) > 1 else ""
        raise ConfigError(f"data: {files[i]}: cannot decode image ({reason}){more}; fix or remove the file")
    return x


def probabilities(outputs: np.ndarray) -> np.ndarray:
    """(N, classes) probabilities; a single sigmoid unit is p(class 1)."""
    outputs = np.asarray(outputs, np.float64)
    if outputs.shape[1] == 1:
        return np.concatenate([1.0 - outputs, outputs], axis=1)
    return outputs


def image_names(relative: list[str]) -> list[str]:
    """Output PNG per input: its relative path with the suffix .png; inputs that would share one (a.jpg, a.png)
    keep their whole name (a.jpg.png, a.png.png)."""
    plain = [Path(r).with_suffix(".png").as_posix() for r in relative]
    taken = Counter(plain)
    return [p if taken[p] == 1 else f"{r}.png" for p, r in zip(plain, relative)]


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Model outputs to 8-bit pixels: float outputs are on the [0, 1] scale the model sees its inputs at."""
    if images.dtype == np.uint8:
        return images
    return np.rint(np.clip(np.asarray(images, np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)


def predict(tracking_cfg, run_id: str | None, data, out=None, batch_size: int = DEFAULT_BATCH_SIZE,
            model_uri: str | None = None) -> Path:
    """Write the predictions of run `run_id`'s model, or of the MLflow Model at `model_uri`, for every image
    under `data`; returns the CSV's path."""
    from PIL import Image

    root, files = list_images(data)
    relative = [f.relative_to(root).as_posix() for f in files]
    with tracking.scratch_dir() as scratch:
        model, class_names, run_id = load_run(tracking_cfg, run_id, Path(scratch), model_uri=model_uri)
    csv = output_csv(out, run_id or "model")
    task, class_names = task_of(model, class_names, run_id)
    _, size, _, channels = model.input_shape
    outputs = image_names(relative) if task == "image" else []

    rows = []
    for start in range(0, len(files), CHUNK):
        x = decode(root, files[start:start + CHUNK], size, channels)
        predicted = np.asarray(model.predict(x, batch_size=batch_size, verbose=0))
        if task == "classify":
            rows.append(probabilities(predicted))
            continue
        for k, image in enumerate(to_uint8(predicted)):
            target = csv.parent / "images" / outputs[start + k]
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(target)

    csv.parent.mkdir(parents=True, exist_ok=True)
    if task == "classify":
        p = np.concatenate(rows)
        best = p.argmax(axis=1)
        table = pd.DataFrame({"file": relative, "predicted": [class_names[i] for i in best],
                              "probability": p[np.arange(len(p)), best]})
        table = pd.concat([table, pd.DataFrame(p, columns=[f"p_{name}" for name in class_names])], axis=1)
    else:
        table = pd.DataFrame({"file": relative, "output": [f"images/{name}" for name in outputs]})
    table.to_csv(csv, index=False)

    print(f"{len(table)} images from {root}, " + (f"model {model_uri} (of run {run_id})" if model_uri else
                                                    f"model of run {run_id}"))
    if task == "classify":
        counts = table["predicted"].value_counts()
        for name in class_names:
            print(f"  {name}: {int(counts.get(name, 0))}")
    else:
        print(f"  output images: {csv.parent / 'images'}")
    print(f"predictions: {csv}")
    return csv


@renamed_refused
@hydra.main(config_path="../conf", config_name="predict", version_base="1.3")
@guard.command
def main(cfg: DictConfig) -> None:
    """`ablation-predict run_id=ID|model_uri=models:/NAME/latest data=FOLDER ...`"""
    paths.configure(cfg.get("paths"))
    predict(cfg.tracking, **options(cfg))


def call(argv: list[str]) -> int:
    """The command for callers in Python: argv as on the command line, this command's own values taken as they
    are (no override grammar), the exit code returned (2 and one `error:` line for a user error)."""
    from ablation.cli.compose import compose_app

    own = {key: value for key, _, value in (a.lstrip("+").partition("=") for a in argv) if key in ARGUMENTS}
    overrides = [a for a in argv if a.lstrip("+").partition("=")[0] not in ARGUMENTS]
    try:
        with guard.guard():
            cfg = compose_app("predict", overrides)
            cfg.merge_with(own)
            predict(cfg.tracking, **options(cfg))
    except SystemExit as exc:
        return exc.code
    return 0


if __name__ == "__main__":
    main()

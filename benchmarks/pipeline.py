"""Benchmark of the training input pipeline and of what a run costs besides training.

    python benchmarks/pipeline.py            # full: 32, 128 and 224 px (a few minutes on 2 cores)
    python benchmarks/pipeline.py --quick    # 32 and 128 px, fewer images and epochs (< 2 minutes)
    KERAS_BACKEND=jax python benchmarks/pipeline.py --only cifar    # section 6 alone (no TensorFlow needed)
    python benchmarks/pipeline.py --only throughput                 # section 1 alone (32, 128, 224 px)

Sections, each printed as a Markdown table and written together to runs/bench/pipeline.md:
1. Augmentation throughput (images/s) of the `idg_classic` policy: ours (ablation.training.batches.Batches through Keras'
   PyDataset adapter as fit consumes it, and the bare batches[i] loop), Keras' legacy ImageDataGenerator, the
   same policy as Keras 3 preprocessing layers in a tf.function, and the raw albumentations loop (the host
   ceiling). Targets: ours >= 5x ImageDataGenerator at >= 128 px on one worker; ours >= 0.9x the raw loop.
2. Augmentation overhead of a real run (ablation.training.run.run): epoch time of idg_classic / none. Target <= 1.15.
3. Tracking overhead: a run tracked to a persistent store (runs/bench/) vs a throwaway one. Target: at most 2%
   slower.
4. Decode once: the second datasets.load of a folder dataset vs the first (decode cache). Target <= 10%.
5. Worker defaults: workers=1 vs 2 (threads; processes in the full run) through fit, small_cnn, idg_classic.
6. One training epoch on a CIFAR-10-sized set (synthetic: 50,000 training images of 32x32x3 uint8, 10 classes;
   --quick 2,500) through ablation.training.run.run with small_cnn and idg_classic: images/s, the share of the training
   time the fit loop waited for input, and epoch seconds, from the run's MLflow metrics, with the run's device
   and Keras backend tags. The one section meant for GPU machines; `--only cifar` runs it alone, on any backend.

Section 1 needs TensorFlow (ImageDataGenerator, tf.data, tf.function); without it that section is skipped with a
line saying so, and the others run on whichever Keras backend KERAS_BACKEND selects.

Every timing excludes warm-up (first batches, tracing, first epochs). Images come from np.random.default_rng(0).
The machine is shared: the load average and the busiest other processes are printed with the results.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import logging
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
warnings.filterwarnings("ignore")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CONF = ROOT / "ablation" / "conf"
OUT_DIR = ROOT / "runs" / "bench"
BATCH = 64
POLICY = "idg_classic"
EXPERIMENT = "bench"  # MLflow experiment of the benchmark's runs (in its own stores, never runs/mlflow.db)
# ImageDataGenerator arguments identical to ablation/conf/augmentation/idg_classic.yaml.
IDG_ARGS = dict(rotation_range=45, zoom_range=0.4, width_shift_range=0.2, height_shift_range=0.2,
                horizontal_flip=True, fill_mode="nearest")

import albumentations as A
import cv2
import keras
import numpy as np
from hydra import compose, initialize_config_dir
from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter
from omegaconf import OmegaConf

from ablation import augment, datasets
from ablation.training import backend, models
from ablation.training.batches import Batches, Draw, Feed

# CIFAR10_CLASSES stays importable from here: tests/test_perf.py reads it off this module.
from benchmarks.common import CIFAR10_CLASSES, fmt, installed, md_table, write_cifar_like  # noqa: F401

logging.getLogger("mlflow").setLevel(logging.ERROR)
logging.getLogger("alembic").setLevel(logging.ERROR)
# Imported by main() for the sections that use it, not at import time: `--only cifar` must run where the
# TensorFlow wheel is absent (a GPU machine on JAX), and on JAX need not load it at all.
tf = None


def import_tensorflow() -> bool:
    global tf
    try:
        import tensorflow
    except ImportError:
        return False
    tf = tensorflow
    tf.get_logger().setLevel("ERROR")
    return True


# ---------------------------------------------------------------------------------------------- helpers

def images(n: int, size: int, channels: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, size, size, channels), dtype=np.uint8), rng.integers(0, 10, n)


def rate(one_pass, n_images: int, repeats: int, warmup: int = 1) -> float:
    """Images per second of one_pass (which handles n_images) over its fastest of `repeats` calls, after `warmup`
    calls. The fastest, as timeit advises: on a shared machine other processes only ever slow a pass down."""
    return interleaved({"one": (one_pass, warmup)}, n_images, repeats)["one"]


def interleaved(passes: dict, n_images: int, repeats: int) -> dict[str, float]:
    """{name: (one_pass, warmup calls)} -> {name: images/s}: each warmed up, then timed round-robin, so a burst
    of load from other processes falls on every engine alike rather than on whichever ran at the time. A pass
    that returns a number has timed itself (seconds): its teardown is not part of the pass."""
    for one_pass, warmup in passes.values():
        for _ in range(warmup):
            one_pass()
    best = {name: math.inf for name in passes}
    for _ in range(repeats):
        for name, (one_pass, _) in passes.items():
            started = time.perf_counter()
            timed = one_pass()
            best[name] = min(best[name], time.perf_counter() - started if timed is None else timed)
    return {name: n_images / seconds for name, seconds in best.items()}


def policy_cfg(name: str = POLICY):
    return OmegaConf.load(CONF / "augmentation" / f"{name}.yaml")


def compose_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def load_average() -> float:
    return os.getloadavg()[0]


def busy_processes(limit: int = 4) -> list[str]:
    """The busiest other processes (ps: CPU share over their lifetime), to say what shares the machine."""
    try:
        out = subprocess.run(["ps", "-eo", "pid,pcpu,etime,args", "--sort=-pcpu", "--no-headers"],
                             capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    rows = []
    for line in out.splitlines():
        pid, pcpu, etime, args = line.split(None, 3)
        if int(pid) == os.getpid() or float(pcpu) < 5:
            continue
        rows.append(f"pid {pid} {pcpu}% cpu ({etime}): {args[:90]}")
    return rows[:limit]


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


@contextlib.contextmanager
def quiet():
    """Hide the chatter of a whole run (Keras, MLflow, absl) on stdout/stderr."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


# ---------------------------------------------------------------------------------------------- 1. throughput

def through_adapter(batches: Batches, kind: str):
    """One pass the way fit consumes the training batches.
    kind 'tf': backend.fit_input's tf.data pipeline, what runs feed fit on the TensorFlow backend (batches asked
    for by number, `workers` at a time, prefetched); 'numpy': the PyDataset through Keras' adapter
    (get_numpy_iterator(), what other backends use)."""
    if kind == "tf":
        data, steps = backend.fit_input(batches)

        def one_pass():
            # A fresh iterator per pass: a kept one would fill its prefetch buffer while the other engines are
            # timed, and the pass would only drain it. fit makes its iterator once per run and the feed is endless
            # (backend.fit_input), so what a pass measures is the steady state: from the first batch to the last,
            # per batch. Not timed: starting the iterator (its threads, the first batch: 25-85 ms on 2 cores)
            # and deleting it, which waits for the batch the map had begun beyond the last.
            iterator = iter(data)
            next(iterator)
            first = time.perf_counter()
            for _ in range(steps - 1):
                next(iterator)
            elapsed = (time.perf_counter() - first) * steps / (steps - 1)
            del iterator
            return elapsed

        return one_pass
    adapter = PyDatasetAdapter(batches, shuffle=False)

    def one_pass():
        adapter.on_epoch_begin()
        for _ in adapter.get_numpy_iterator():
            pass
        adapter.on_epoch_end()

    return one_pass


def fit_data(batches: Batches) -> dict:
    """model.fit's training-data arguments, as ablation.training.run passes them."""
    data, steps = backend.fit_input(batches)
    return {"x": data, "steps_per_epoch": steps}


def bare_loop(batches: Batches):
    def one_pass():
        for i in range(len(batches)):
            batches[i]
        batches.on_epoch_end()
    return one_pass


def trivial_fit_rate(batches: Batches, shape, epochs: int) -> float:
    """Images/s through model.fit of a trivial model (pooling + dense): the input path's ceiling through Keras.
    The first epoch (tracing) is excluded; the fastest of the others, as in rate()."""
    model = keras.Sequential([keras.Input(shape), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    timer = EpochTimer()
    model.fit(**fit_data(batches), epochs=epochs + 1, verbose=0, callbacks=[timer])
    return batches.images_per_epoch / min(timer.seconds[1:])


class EpochTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def idg_pass(x, y):
    from tensorflow.keras.preprocessing.image import ImageDataGenerator

    flow = ImageDataGenerator(**IDG_ARGS, rescale=1 / 255).flow(x, y, batch_size=BATCH, shuffle=True, seed=0)
    steps = math.ceil(len(x) / BATCH)

    def one_pass():
        for _ in range(steps):
            next(flow)

    return one_pass


def keras_layers(shape, seed: int = 0):
    """The policy as Keras 3 preprocessing layers: ablation.augment.device.layers_for when it exists, else built here."""
    try:
        from ablation.augment.device import layers_for
    except ImportError:
        layers_for = None
    if layers_for is not None:
        built = layers_for(policy_cfg(), shape, seed)  # a keras.Sequential
        return [built], "ablation.augment.device.layers_for"
    fill = IDG_ARGS["fill_mode"]
    zoom = (-IDG_ARGS["zoom_range"], IDG_ARGS["zoom_range"])
    stack = [keras.layers.RandomRotation(IDG_ARGS["rotation_range"] / 360, fill_mode=fill, seed=seed),
             keras.layers.RandomTranslation(IDG_ARGS["height_shift_range"], IDG_ARGS["width_shift_range"],
                                            fill_mode=fill, seed=seed),
             keras.layers.RandomZoom(zoom, zoom, fill_mode=fill, seed=seed),
             keras.layers.RandomFlip("horizontal", seed=seed)]
    return stack, "built in benchmarks/pipeline.py"


def layers_pass(x):
    stack, origin = keras_layers(x.shape[1:])

    @tf.function
    def augment_batch(batch):
        out = tf.cast(batch, tf.float32) * (1 / 255)
        for layer in stack:
            out = layer(out, training=True)
        return out

    def one_pass():
        for i in range(0, len(x), BATCH):
            augment_batch(x[i:i + BATCH]).numpy()

    return one_pass, origin


def raw_pass(x, policy):
    compose_ = policy._compose(x.shape[1:3])  # the policy's own albumentations Compose, image by image

    def one_pass():
        for image in x:
            compose_(image=image)

    return one_pass


def raw_albumentations_rate(x, policy, repeats: int) -> float:
    return rate(raw_pass(x, policy), len(x), repeats)


def throughput(sizes: dict[int, int], repeats: int, fit_epochs: int) -> tuple[list[dict], str]:
    policy = augment.build(policy_cfg())
    rows, origin = [], ""
    for size, n in sizes.items():
        x, y = images(n, size)
        print(f"  {size} px, {n} images ...", flush=True)

        def make(workers, x=x, y=y):
            return Batches(x, y, BATCH, draw=Draw(policy), feed=Feed(workers))

        layers_one_pass, origin = layers_pass(x)
        passes = {"idg": (idg_pass(x, y), 1), "raw": (raw_pass(x, policy), 1),
                  "layers": (layers_one_pass, 2),  # two warm-ups: the full batches, then the short last one
                  "bare1": (bare_loop(make(1)), 1)}
        for workers in (1, 2):
            passes[f"tf{workers}"] = (through_adapter(make(workers), "tf"), 1)
            passes[f"numpy{workers}"] = (through_adapter(make(workers), "numpy"), 1)
        r = interleaved(passes, n, repeats)
        for workers in (1, 2):
            rows.append({"size": size, "workers": workers, "n": n, "idg": r["idg"], "raw": r["raw"],
                         "layers": r["layers"], "tf": r[f"tf{workers}"], "numpy": r[f"numpy{workers}"],
                         "bare": r["bare1"] if workers == 1 else None,
                         "fit": trivial_fit_rate(make(workers), x.shape[1:], fit_epochs)})
    return rows, origin


def throughput_table(rows: list[dict]) -> tuple[str, list[str]]:
    header = ["size", "workers", "ours: fit path (tf.data)", "ours: numpy iterator", "ours: batches[i]",
              "ours: fit, trivial model", "ImageDataGenerator .flow", "Keras layers (tf.function)",
              "albumentations raw loop", "ours / IDG", "ours / raw", "target >= 5x IDG (>= 128 px, 1 worker)",
              "target >= 0.9x raw"]
    table, misses = [], []
    for r in rows:
        vs_idg, vs_raw = r["tf"] / r["idg"], r["tf"] / r["raw"]
        idg_target = verdict(vs_idg >= 5) if r["size"] >= 128 and r["workers"] == 1 else "n/a"
        raw_target = verdict(vs_raw >= 0.9)
        for name, result in (("5x IDG", idg_target), ("0.9x raw", raw_target)):
            if result == "MISS":
                misses.append(f"{name} at {r['size']} px, {r['workers']} worker(s)")
        first = r["workers"] == 1  # the single-threaded references are measured once per size
        table.append([f"{r['size']} px", r["workers"], fmt(r["tf"]), fmt(r["numpy"]), fmt(r["bare"]), fmt(r["fit"]),
                      fmt(r["idg"]) if first else "″", fmt(r["layers"]) if first else "″",
                      fmt(r["raw"]) if first else "″", f"{vs_idg:.1f}x", f"{vs_raw:.2f}x", idg_target, raw_target])
    return md_table(header, table), misses


# ---------------------------------------------------------------------------------------------- 2./3. real runs

def run_once(overrides: list[str]) -> tuple[dict, float, list[float], list[float]]:
    """ablation.training.run.run on a composed config; (its metrics, wall seconds, per-epoch seconds and per-epoch share
    of the training time the fit loop waited for its next batch, both from MLflow)."""
    from ablation import tracking
    from ablation.training import run as runner

    cfg = compose_cfg("trainer.verbose=0", "tracking.log_model=false", "sweep.rerun=true", *overrides)
    started = time.perf_counter()
    with quiet():
        metrics = runner.run(cfg)
    wall = time.perf_counter() - started
    client = tracking.client(cfg.tracking)

    def history(key: str) -> list[float]:
        return [m.value for m in sorted(client.get_metric_history(metrics["run_id"], key), key=lambda m: m.step)]

    return metrics, wall, history("time/epoch_s"), history("perf/input_wait_fraction")


def overhead(store: str, epochs: int, pairs: int) -> dict:
    """Mean epoch time (first epoch excluded: it traces) of `none` and `idg_classic`, runs alternated."""
    base = [f"tracking.uri={store}", f"trainer.epochs={epochs}", f"experiment_name={EXPERIMENT}"]
    means = {"none": [], POLICY: []}
    medians = {"none": [], POLICY: []}
    waits = {"none": [], POLICY: []}
    for i in range(pairs):
        for name in (list(means) if i % 2 == 0 else list(means)[::-1]):  # ABBA: no order effect
            _, _, per_epoch, wait = run_once([*base, f"augmentation={name}"])
            means[name].append(statistics.mean(per_epoch[1:]))
            medians[name].append(statistics.median(per_epoch[1:]))
            waits[name].append(statistics.mean(wait[1:]) if len(wait) > 1 else float("nan"))
    none, aug = statistics.median(means["none"]), statistics.median(means[POLICY])
    robust = statistics.median(medians[POLICY]) / statistics.median(medians["none"])
    return {"none": none, "aug": aug, "ratio": aug / none, "runs": means, "median_ratio": robust,
            "wait": {k: statistics.median(v) for k, v in waits.items()}}


def tracking_overhead(throwaway: str, persistent: str, epochs: int, repeats: int) -> dict:
    """Total wall time of the same `none` run tracked to the persistent store vs a throwaway one, alternated.
    Both stores and their experiment exist before the timed runs (the throwaway one from section 2, the
    persistent one from earlier benchmarks or a warm-up run), so no timed run pays for creating a schema."""
    stores = {"persistent": persistent, "throwaway": throwaway}
    walls = {k: [] for k in stores}
    outside_fit = {k: [] for k in stores}  # wall - time/fit_s: data, model build, MLflow, plots; less noisy
    run_once([f"tracking.uri={persistent}", "trainer.epochs=1", f"experiment_name={EXPERIMENT}"])  # warm-up
    for i in range(repeats):
        for name in (list(stores) if i % 2 == 0 else list(stores)[::-1]):  # ABBA: no order effect
            metrics, wall, _, _ = run_once([f"tracking.uri={stores[name]}", f"trainer.epochs={epochs}",
                                            f"experiment_name={EXPERIMENT}"])
            walls[name].append(wall)
            outside_fit[name].append(wall - metrics["time/fit_s"])
    p, t = statistics.median(walls["persistent"]), statistics.median(walls["throwaway"])
    po, to = statistics.median(outside_fit["persistent"]), statistics.median(outside_fit["throwaway"])
    return {"persistent": p, "throwaway": t, "ratio": p / t, "walls": walls,
            "outside": {"persistent": po, "throwaway": to}, "outside_fit": outside_fit}


# ---------------------------------------------------------------------------------------------- 4. decode once

def write_jpegs(root: Path, n: int, size: int = 64, classes: int = 4) -> None:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(n):
        folder = root / f"class{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        # Smooth structure plus noise, so the JPEGs compress and decode like photos rather than static.
        fx, fy, phase = rng.uniform(0.02, 0.2, 3)
        base = 127 + 80 * np.sin(fx * xx + fy * yy + phase * 10)[..., None] * rng.uniform(0.3, 1, 3)
        image = np.clip(base + rng.normal(0, 12, (size, size, 3)), 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"{i:05d}.jpg"), image)


def decode_once(tmp: Path, n: int) -> dict:
    folder = tmp / "jpegs"
    write_jpegs(folder, n)
    dataset = compose_cfg("dataset=folder", f"dataset.path={folder}").dataset

    def timed(cfg) -> tuple[float, float]:
        started = time.perf_counter()
        splits = datasets.load(cfg)
        loaded = time.perf_counter() - started
        # What the runner then reads: every pixel once (memory-mapped arrays load on first access).
        for split in (splits.train, splits.val, splits.test):
            int(np.asarray(split.x).sum(dtype=np.uint64))
        return loaded, time.perf_counter() - started

    cached = "cache" in dataset
    first = timed(dataset)
    second = timed(dataset)
    return {"n": n, "first": first, "second": second, "ratio": second[0] / first[0],
            "ratio_touched": second[1] / first[1], "cache_key": cached}


# ---------------------------------------------------------------------------------------------- 5. workers

def workers_through_fit(sizes: dict[int, int], epochs: int, multiprocessing: bool) -> list[dict]:
    """Training images/s of small_cnn fed by Batches(idg_classic): one fit(epochs=1) per setting in turn (the
    first of each is the warm-up that traces), the fastest of the next `epochs` rounds, as in interleaved()."""
    policy = augment.build(policy_cfg())
    settings = [(1, False), (2, False)] + ([(2, True)] if multiprocessing else [])
    rows = []
    for size, n in sizes.items():
        x, y = images(n, size)
        runs = []
        for workers, processes in settings:
            batches = Batches(x, y, BATCH, draw=Draw(policy), feed=Feed(workers, processes))
            keras.utils.set_random_seed(0)
            model = models.build_small_cnn(x.shape[1:], 10)
            model.compile("adam", "sparse_categorical_crossentropy")
            runs.append((workers, processes, batches, model, EpochTimer()))
        for _ in range(epochs + 1):
            for _, _, batches, model, timer in runs:
                model.fit(**fit_data(batches), epochs=1, verbose=0, callbacks=[timer])
        rows += [{"size": size, "workers": workers, "processes": processes,
                  "rate": batches.images_per_epoch / min(timer.seconds[1:])}
                 for workers, processes, batches, model, timer in runs]
    return rows


def recommend(rows: list[dict]) -> str:
    by = {(r["size"], r["workers"], r["processes"]): r["rate"] for r in rows}
    sizes = sorted({r["size"] for r in rows})
    gains = [by[(s, 2, False)] / by[(s, 1, False)] for s in sizes]
    gain = math.exp(statistics.mean(math.log(g) for g in gains))
    detail = ", ".join(f"{s} px {by[(s, 2, False)] / by[(s, 1, False)]:.2f}x" for s in sizes)
    # One worker keeps a single background producer (tf.data map + prefetch); move to two only for a clear gain,
    # since the second worker competes with the training step for the same two cores.
    workers = 2 if gain >= 1.05 and min(gains) >= 0.95 else 1
    text = (f"trainer.workers={workers}: workers=2 / workers=1 through fit = {detail} "
            f"(geometric mean {gain:.2f}x; 2 would be chosen only for >= 1.05x with no size losing > 5%).")
    mp = [(s, by[(s, 2, True)] / by[(s, 2, False)]) for s in sizes if (s, 2, True) in by]
    if mp:
        text += (" use_multiprocessing=" + ("true" if all(g >= 1.05 for _, g in mp) else "false") + ": processes / "
                 "threads at 2 workers = " + ", ".join(f"{s} px {g:.2f}x" for s, g in mp)
                 + " (every batch is pickled back to the main process).")
    else:
        text += (" use_multiprocessing=false: not measured with --quick (run without it); processes pickle every "
                 "batch back to the main process.")
    return text


# ---------------------------------------------------------------------------------------------- 6. CIFAR-10-sized epoch

CIFAR_METRICS = ("throughput/images_per_s", "perf/input_wait_fraction", "time/epoch_s")


def cifar_epoch(tmp: Path, n_train: int, n_eval: int, epochs: int = 2, overrides: tuple[str, ...] = ()) -> dict:
    """ablation.training.run.run of small_cnn with idg_classic on the synthetic set, tracked to a throwaway store in tmp.
    Returns, from the run's MLflow record, per epoch the CIFAR_METRICS, and the run's device and backend tags."""
    from ablation import tracking
    from ablation.training import run as runner

    npz = tmp / "cifar10-synthetic.npz"
    write_cifar_like(npz, n_train, n_eval)
    cfg = compose_cfg("dataset=npz", f"dataset.path={npz}", "dataset.cache=false", "model=small_cnn",
                      f"augmentation={POLICY}", f"trainer.epochs={epochs}", f"trainer.batch_size={BATCH}",
                      "trainer.verbose=0", "tracking.log_model=false", "sweep.rerun=true",
                      f"tracking.uri=sqlite:///{tmp / 'cifar.db'}", f"experiment_name={EXPERIMENT}", *overrides)
    started = time.perf_counter()
    with quiet():
        metrics = runner.run(cfg)
    wall = time.perf_counter() - started
    client = tracking.client(cfg.tracking)
    record = client.get_run(metrics["run_id"]).data
    history = {key: [m.value for m in sorted(client.get_metric_history(metrics["run_id"], key), key=lambda m: m.step)]
               for key in CIFAR_METRICS}
    return {"epochs": [dict(zip(CIFAR_METRICS, values)) for values in zip(*history.values())],
            "device": record.tags.get("device"), "backend": record.tags.get("keras_backend"),
            "n_train": int(record.metrics["data/n_train"]), "n_val": int(record.metrics["data/n_val"]),
            "data_load_s": record.metrics["time/data_load_s"], "fit_s": metrics["time/fit_s"], "wall": wall,
            "batch_size": cfg.trainer.batch_size, "workers": cfg.trainer.workers,
            "clean_train_size": cfg.trainer.clean_train_size}


def cifar_section(quick: bool) -> str:
    n_train, n_eval = (2_500, 500) if quick else (50_000, 5_000)
    title = (f"## 6. One training epoch on a CIFAR-10-sized set (synthetic, {n_train:,} x 32x32x3 uint8, 10 classes; "
             f"small_cnn, {POLICY}, batches of {BATCH}, through ablation.training.run.run)")
    print(f"\n{title}\n", flush=True)
    with tempfile.TemporaryDirectory(prefix="ablation-bench-cifar-") as tmp:
        os.environ[datasets.CACHE_ENV] = str(Path(tmp) / "cache")  # never touch runs/cache
        c = cifar_epoch(Path(tmp), n_train, n_eval)
    rows = [[f"{i}" + (" (warm-up: tracing and compilation; not the result)" if i == 1 else ""),
             fmt(e["throughput/images_per_s"]), f"{e['perf/input_wait_fraction']:.1%}", f"{e['time/epoch_s']:.1f}"]
            for i, e in enumerate(c["epochs"], start=1)]
    table = md_table(["epoch", "training images/s (throughput/images_per_s)",
                      "fit loop waiting for input (perf/input_wait_fraction)", "epoch s (time/epoch_s)"], rows)
    measured = c["epochs"][-1]
    line = (f"device: {c['device']} (run tag `device`), Keras backend {c['backend']} (tag `keras_backend`): one epoch "
            f"of {c['n_train']:,} images trains at {fmt(measured['throughput/images_per_s'])} images/s with the fit loop "
            f"waiting {measured['perf/input_wait_fraction']:.1%} of the training time for its next batch.")
    notes = (f"Epoch 2 is the measurement, epoch 1 the warm-up. images/s counts the training part of the epoch only; "
             f"epoch s also includes the validation pass ({c['n_val']:,} images) and the clean evaluation of "
             f"{c['clean_train_size']} training images. trainer.workers={c['workers']}; data load "
             f"{c['data_load_s']:.1f} s; the whole run {c['wall']:.0f} s (fit {c['fit_s']:.0f} s).")
    print(f"{table}\n\n{line}\n\n{notes}", flush=True)
    return f"{title}\n\n{table}\n\n{line}\n\n{notes}"


# ---------------------------------------------------------------------------------------------- main

def machine() -> list[str]:
    return [f"- machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
            f"Python {platform.python_version()}",
            f"- versions: tensorflow {installed('tensorflow')}, jax {installed('jax')}, keras {keras.__version__} "
            f"(backend {keras.backend.backend()}), albumentations {A.__version__}, "
            f"opencv {cv2.__version__} ({cv2.getNumThreads()} threads), numpy {np.__version__}"]


def throughput_section(quick: bool) -> tuple[str, list[str]]:
    """Section 1: (its Markdown, the targets it missed)."""
    sizes = {32: 1024, 128: 512} if quick else {32: 4096, 128: 1024, 224: 1024}
    repeats = 3 if quick else 5
    print("\n## 1. Augmentation throughput, images/s (idg_classic, batches of 64)\n", flush=True)
    rows, origin = throughput(sizes, repeats, fit_epochs=2 if quick else 3)
    table, missed = throughput_table(rows)
    notes = (f"Fastest of {repeats} passes per engine, timed round-robin after a warm-up pass (fit: fastest epoch "
             f"after the first); images {', '.join(f'{n} x {s} px' for s, n in sizes.items())}"
             f" RGB uint8. 'ours' in the ratios = the fit path: Batches through backend.fit_input's tf.data pipeline "
             f"(map over batch numbers with `workers` parallel calls, prefetched). ImageDataGenerator,"
             f" Keras layers ({origin}) and the raw albumentations loop are single-threaded references (″ = as above).")
    section = f"## 1. Augmentation throughput, images/s ({POLICY}, batches of {BATCH})\n\n{table}\n\n{notes}"
    print(table + "\n\n" + notes, flush=True)
    return section, missed


def pipeline_sections(quick: bool) -> tuple[list[str], list[str]]:
    """Sections 1-5: (their Markdown, the targets they missed)."""
    sections: list[str] = []
    misses: list[str] = []

    # 1. Throughput (its references are TensorFlow's: ImageDataGenerator, tf.data, tf.function)
    if tf is None:
        line = ("skipped: tensorflow is not importable (install it to compare with ImageDataGenerator, tf.data and "
                "tf.function; the other sections run on any Keras backend)")
        print(f"\n## 1. Augmentation throughput\n\n{line}", flush=True)
        sections.append(f"## 1. Augmentation throughput ({POLICY}, batches of {BATCH})\n\n{line}")
    else:
        section, missed = throughput_section(quick)
        sections.append(section)
        misses += missed

    with tempfile.TemporaryDirectory(prefix="ablation-bench-") as tmp:
        tmp = Path(tmp)
        os.environ[datasets.CACHE_ENV] = str(tmp / "cache")  # never touch runs/cache
        throwaway = f"sqlite:///{tmp / 'bench.db'}"

        # 2. Augmentation overhead in a real run
        epochs = 4 if quick else 6
        pairs = 2 if quick else 3
        print(f"\n## 2. Augmentation overhead (ablation.training.run.run, digits, small_cnn, {epochs} epochs)\n", flush=True)
        run_once([f"tracking.uri={throwaway}", "trainer.epochs=1", f"experiment_name={EXPERIMENT}"])  # warm-up
        o = overhead(throwaway, epochs, pairs)
        ok = o["ratio"] <= 1.15
        misses += [] if ok else ["augmentation overhead"]
        table = md_table(["policy", "mean epoch s (epochs 2..), median of runs", "each run",
                          "fit loop waiting for input (perf/input_wait_fraction)"],
                         [[name, f"{o['none' if name == 'none' else 'aug']:.3f}",
                           ", ".join(f"{v:.3f}" for v in o["runs"][name]), f"{o['wait'][name]:.1%}"]
                          for name in ("none", POLICY)])
        line = (f"epoch-time ratio {POLICY} / none = {o['ratio']:.3f} (target <= 1.15): {verdict(ok)}  "
                f"[with per-run medians instead of means: {o['median_ratio']:.3f}]")
        print(f"{table}\n\n{line}", flush=True)
        sections.append(f"## 2. Augmentation overhead (real runs, digits 32 px, small_cnn, {epochs} epochs, "
                        f"time/epoch_s from MLflow, epoch 1 excluded, median of {pairs} run(s) each)\n\n{table}\n\n{line}")

        # 3. Tracking overhead
        repeats_t = 2 if quick else 5
        persistent = f"sqlite:///{OUT_DIR / 'mlflow.db'}"
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        print(f"\n## 3. Tracking overhead (`none`, {epochs} epochs, {repeats_t} alternated runs per store)\n", flush=True)
        t = tracking_overhead(throwaway, persistent, epochs, repeats_t)
        # The target bounds the cost of tracking: a persistent store that comes out faster (run-to-run noise) is
        # within it too.
        ok = t["ratio"] <= 1.02
        misses += [] if ok else ["tracking overhead"]
        labels = {"persistent": f"persistent ({OUT_DIR.relative_to(ROOT)}/mlflow.db)", "throwaway": "throwaway (temp dir)"}
        table = md_table(["store", "median total s", "each run", "median s outside fit (wall - time/fit_s)"],
                         [[labels[k], f"{t[k]:.2f}", ", ".join(f"{v:.2f}" for v in t["walls"][k]),
                           f"{t['outside'][k]:.2f}"] for k in labels])
        delta = t["outside"]["persistent"] - t["outside"]["throwaway"]
        line = (f"total-time ratio persistent / throwaway = {t['ratio']:.3f} (target <= 1.02): {verdict(ok)}  "
                f"[outside fit the persistent store costs {delta:+.2f} s per run = {delta / t['throwaway']:+.1%} "
                f"of a run]")
        print(f"{table}\n\n{line}", flush=True)
        sections.append(f"## 3. Tracking overhead (wall time of ablation.training.run.run, `none`, {epochs} epochs)\n\n"
                        f"{table}\n\n{line}")

        # 4. Decode once
        n_jpegs = 2000
        print(f"\n## 4. Decode once (folder dataset, {n_jpegs} JPEGs of 64 px)\n", flush=True)
        d = decode_once(tmp, n_jpegs)
        ok = d["ratio"] <= 0.10
        misses += [] if ok else ["decode once"]
        table = md_table(["load", "datasets.load s", "load + read every pixel s"],
                         [["first (decodes" + (", writes the cache)" if d["cache_key"] else ")"),
                           f"{d['first'][0]:.3f}", f"{d['first'][1]:.3f}"],
                          ["second", f"{d['second'][0]:.3f}", f"{d['second'][1]:.3f}"]])
        line = (f"second / first = {d['ratio']:.1%} (with every pixel read: {d['ratio_touched']:.1%}; target "
                f"<= 10%): {verdict(ok)}" + ("" if d["cache_key"] else "  [dataset.cache not in the config yet]"))
        print(f"{table}\n\n{line}", flush=True)
        sections.append(f"## 4. Decode once (folder dataset, {n_jpegs} JPEGs of 64 px, "
                        f"{datasets.CACHE_ENV} in a temp dir)\n\n{table}\n\n{line}")

    # 5. Worker defaults
    sizes5 = {32: 512, 128: 128} if quick else {32: 2048, 128: 1024}
    epochs5 = 2 if quick else 4
    print(f"\n## 5. Workers through fit (small_cnn, {POLICY}, {epochs5} timed rounds after a warm-up)\n", flush=True)
    w = workers_through_fit(sizes5, epochs5, multiprocessing=not quick)
    table = md_table(["size", "images", "workers", "use_multiprocessing", "train img/s"],
                     [[f"{r['size']} px", sizes5[r["size"]], r["workers"], str(r["processes"]).lower(),
                       fmt(r["rate"])] for r in w])
    advice = recommend(w)
    print(f"{table}\n\nRecommendation: {advice}", flush=True)
    sections.append(f"## 5. Worker defaults (small_cnn through fit, {POLICY}, RGB, fastest of {epochs5} epochs run round-robin after a warm-up)"
                    f"\n\n{table}\n\nRecommendation: {advice}")
    return sections, misses


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="32 and 128 px, fewer images and epochs (< 2 minutes)")
    parser.add_argument("--only", choices=["throughput", "cifar"],
                        help="run one section alone: throughput = 1, augmentation throughput (TensorFlow); cifar = 6, "
                             "one epoch on a CIFAR-10-sized set (any Keras backend)")
    parser.add_argument("--out", type=Path, default=None,
                        help="where the report is written (default runs/bench/pipeline.md; with --only, "
                             "runs/bench/<section>.md)")
    args = parser.parse_args(argv)
    quick = args.quick
    out = args.out or OUT_DIR / (f"{args.only}.md" if args.only else "pipeline.md")
    if args.only != "cifar":
        import_tensorflow()
    started = time.perf_counter()
    load_start = load_average()
    mode = ("quick" if quick else "full") + (f", --only {args.only}" if args.only else "")
    print(f"# ablation pipeline benchmark ({mode})\n")
    print("\n".join(machine()))
    print(f"- load average at start: {load_start:.2f}" + ("  (BUSY: other processes share the 2 cores; "
                                                           "figures are noisy)" if load_start >= 1.5 else ""))
    for line in busy_processes():
        print(f"  - other process: {line}")
    if args.only == "throughput":
        if tf is None:
            print("--only throughput needs TensorFlow (ImageDataGenerator, tf.data and tf.function are its references)",
                  file=sys.stderr)
            return 2
        section, misses = throughput_section(quick)
        sections = [section]
    else:
        sections, misses = ([], []) if args.only else pipeline_sections(quick)
        # 6. One training epoch on a CIFAR-10-sized set
        sections.append(cifar_section(quick))

    load_end = load_average()
    elapsed = time.perf_counter() - started
    if args.only == "cifar":
        summary = "Section 6 alone (--only cifar): it has no target; it reports images/s and input wait."
    else:
        summary = ("All targets met." if not misses else "Targets missed: " + "; ".join(misses) + ".")
    print(f"\n{summary}\nLoad average at end: {load_end:.2f}; {elapsed:.0f} s in all.")
    backend = f"KERAS_BACKEND={os.environ['KERAS_BACKEND']} " if os.environ.get("KERAS_BACKEND") else ""
    flags = (" --only " + args.only if args.only else "") + (" --quick" if quick else "")
    header = [f"# Pipeline benchmark ({mode}), {time.strftime('%Y-%m-%d %H:%M')}", "",
              f"`{backend}python benchmarks/pipeline.py{flags}`", "", *machine(),
              f"- load average: {load_start:.2f} at start, {load_end:.2f} at end (the end includes this benchmark's own "
              f"threads)" + (" - the machine was busy when it started: figures are noisy" if load_start >= 1.5 else ""),
              *[f"  - other process: {line}" for line in busy_processes()],
              f"- {elapsed:.0f} s in all", "", summary]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(header) + "\n\n" + "\n\n".join(sections) + "\n")
    print(f"Written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Where the time of a training batch goes, and what the prototypes in proto_batches.py would buy.

    python benchmarks/profile_batches.py [--quick] [--cprofile SIZE]

1. Per batch of 64 (idg_classic, RGB uint8): the gather x[idx], Policy.augment_batch (of which the cv2 warps),
   the rescale to float32, and what Keras' tf.data adapter adds on top of the bare batches[i] loop.
2. Images/s of the current Batches and of the prototypes, bare and through the fit path
   (PyDatasetAdapter.get_tf_dataset, workers=1), against the raw albumentations loop.
--cprofile SIZE also prints cProfile's top functions of the bare batches[i] loop at that size.
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cv2  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pipeline as P  # noqa: E402  (sets the environment and sys.path, shares the timing helpers)
from proto_batches import BatchAffinePolicy, OnePassBatches, Uint8Batches  # noqa: E402

from ablation import augment  # noqa: E402
from ablation.batches import Batches  # noqa: E402


def per_batch_ms(fn, batches: int, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times) / batches * 1e3  # fastest pass, as pipeline.rate


def stages(size: int, n: int, repeats: int) -> list:
    policy = augment.build(P.policy_cfg())
    x, y = P.images(n, size)
    batches = Batches(x, y, P.BATCH, policy=policy, shuffle=True)
    steps = len(batches)
    order = batches._order
    idx = [order[i * P.BATCH:(i + 1) * P.BATCH] for i in range(steps)]
    gathered = [x[i] for i in idx]
    augmented = [policy.augment_batch(g, np.random.default_rng(k)) for k, g in enumerate(gathered)]
    affine = policy._compose((size, size)).transforms[0]
    matrices = [[affine.get_params_dependent_on_data({"shape": img.shape}, {})["matrix"] for img in g]
                for g in gathered]

    def warps():
        for g, ms in zip(gathered, matrices):
            for img, m in zip(g, ms):
                affine.apply(img, m)

    gather = per_batch_ms(lambda: [x[i] for i in idx], steps, repeats)
    aug = per_batch_ms(lambda: [policy.augment_batch(g, np.random.default_rng(k)) for k, g in enumerate(gathered)],
                       steps, repeats)
    warp = per_batch_ms(warps, steps, repeats)
    rescale = per_batch_ms(lambda: [a.astype(np.float32) * np.float32(1 / 255) for a in augmented], steps, repeats)
    one_pass = per_batch_ms(lambda: [np.multiply(a, np.float32(1 / 255), dtype=np.float32) for a in augmented],
                            steps, repeats)
    bare = per_batch_ms(P.bare_loop(batches), steps, repeats)
    fit_path = per_batch_ms(P.through_adapter(Batches(x, y, P.BATCH, policy=policy, shuffle=True), "tf"), steps,
                            repeats)
    return [f"{size} px", f"{gather:.2f}", f"{aug:.2f}", f"{warp:.2f}", f"{aug - warp:.2f}", f"{rescale:.2f}",
            f"{one_pass:.2f}", f"{bare:.2f}", f"{fit_path - bare:.2f}", f"{fit_path:.2f}"]


def prototypes(size: int, n: int, repeats: int) -> list:
    policy = augment.build(P.policy_cfg())
    fast = BatchAffinePolicy(policy)
    threads = cv2.getNumThreads()
    x, y = P.images(n, size)
    raw = P.raw_albumentations_rate(x, policy, repeats)
    variants = {
        "Batches (now)": Batches(x, y, P.BATCH, policy=policy, shuffle=True),
        "one-pass rescale": OnePassBatches(x, y, P.BATCH, policy=policy, shuffle=True),
        "uint8 out": Uint8Batches(x, y, P.BATCH, policy=policy, shuffle=True),
        "uint8 out + batch affine": Uint8Batches(x, y, P.BATCH, policy=fast, shuffle=True),
    }
    cv2.setNumThreads(1)
    raw_one_thread = P.raw_albumentations_rate(x, policy, repeats)
    cv2.setNumThreads(threads)
    row = [f"{size} px", P.fmt(raw), P.fmt(raw_one_thread)]
    for name, batches in variants.items():
        bare = P.rate(P.bare_loop(batches), n, repeats)
        fit_path = P.rate(P.through_adapter(batches, "tf"), n, repeats)
        row += [f"{P.fmt(bare)} / {P.fmt(fit_path)} ({fit_path / raw:.2f}x)"]
    for batches in (Batches(x, y, P.BATCH, policy=policy, shuffle=True),
                    Uint8Batches(x, y, P.BATCH, policy=fast, shuffle=True)):
        mapped = P.rate(through_tf_map(batches), n, repeats)
        row += [f"{P.fmt(mapped)} ({mapped / raw:.2f}x)"]
    # End to end through fit (trivial model): the current float32 batches vs uint8 + Rescaling in the model.
    now = P.trivial_fit_rate(Batches(x, y, P.BATCH, policy=policy, shuffle=True), x.shape[1:], 2)
    best = trivial_fit_uint8(Uint8Batches(x, y, P.BATCH, policy=fast, shuffle=True), x.shape[1:], 2)
    return row + [P.fmt(now), P.fmt(best)]


def through_tf_map(batches):
    """The fit path without from_generator: tf.data range -> map(numpy_function(batches[i]), 2 parallel calls,
    in order) -> prefetch. Batches' own epoch counter is advanced by hand here (fit would need a callback)."""
    import tensorflow as tf

    first = batches[0]
    signature = (tf.TensorSpec((None, *first[0].shape[1:]), tf.as_dtype(first[0].dtype)),
                 tf.TensorSpec((None,), tf.as_dtype(first[1].dtype)))

    def load(i):
        x, y = tf.numpy_function(lambda k: batches[int(k)], [i], [s.dtype for s in signature])
        return tf.ensure_shape(x, signature[0].shape), tf.ensure_shape(y, signature[1].shape)

    dataset = (tf.data.Dataset.range(len(batches)).map(load, num_parallel_calls=2, deterministic=True)
               .prefetch(tf.data.AUTOTUNE))

    def one_pass():
        for _ in dataset:
            pass
        batches.on_epoch_end()

    return one_pass


def trivial_fit_uint8(batches, shape, epochs: int) -> float:
    model = keras.Sequential([keras.Input(shape), keras.layers.Rescaling(1 / 255),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    timer = P.EpochTimer()
    model.fit(batches, epochs=epochs + 1, verbose=0, callbacks=[timer])
    return batches.images_per_epoch / min(timer.seconds[1:])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--cprofile", type=int, default=None, metavar="SIZE")
    args = parser.parse_args(argv)
    sizes = {32: 1024, 128: 256} if args.quick else {32: 4096, 128: 1024, 224: 512}
    repeats = 2 if args.quick else 3
    print(f"load average {P.load_average():.2f}; " + "; ".join(P.machine()).replace("- ", ""))
    for line in P.busy_processes():
        print(f"  other process: {line}")

    print("\n## Per batch of 64, ms (fastest pass)\n")
    header = ["size", "gather x[idx]", "augment_batch", "of which cv2 warps", "rest: Compose, sampling, flips, copies",
              "rescale astype*1/255", "rescale one pass", "batches[i] total", "+ tf.data adapter", "fit path total"]
    print(P.md_table(header, [stages(s, n, repeats) for s, n in sizes.items()]), flush=True)

    print("\n## Prototypes, images/s: bare batches[i] / fit path (fit path vs raw albumentations loop)\n")
    header = ["size", "raw albumentations loop", "raw loop, cv2 1 thread", "Batches (now)", "one-pass rescale",
              "uint8 out", "uint8 out + batch affine", "Batches (now) via tf.data map (no from_generator)",
              "uint8 + batch affine via tf.data map",
              "fit trivial model: now", "fit trivial model: uint8 + batch affine"]
    print(P.md_table(header, [prototypes(s, n, repeats) for s, n in sizes.items()]), flush=True)

    if args.cprofile:
        size = args.cprofile
        x, y = P.images(sizes.get(size, 512), size)
        batches = Batches(x, y, P.BATCH, policy=augment.build(P.policy_cfg()), shuffle=True)
        batches[0]
        profiler = cProfile.Profile()
        profiler.runcall(P.bare_loop(batches))
        print(f"\n## cProfile of the bare batches[i] loop at {size} px\n")
        pstats.Stats(profiler).sort_stats("tottime").print_stats(12)
    print(f"load average {P.load_average():.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

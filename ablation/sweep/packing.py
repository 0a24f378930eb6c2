"""Several jobs of a sweep at once on one machine (`hydra/launcher=packed`): Hydra's joblib launcher with as many
worker processes as the device takes, each taking job after job, so it keeps its compiled model between runs of
one architecture (ablation/training/reuse.py), and holding only the GPU memory its runs use. On a node of several
GPUs the workers spread over them (ablation/sweep/gpus.py), each keeping the one it took for all its jobs.

Small models leave a GPU nearly idle and a CPU's cores partly so (a step of small_cnn is mostly Python and
dispatch), so runs side by side raise a sweep's throughput; benchmarks/overhead.py (`--packing`) measures it."""
from __future__ import annotations

import atexit
import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

from ablation.sweep import gpus as node

log = logging.getLogger(__name__)

MAX_JOBS = 8  # on CPUs only
LAUNCHER = "packed"
PACKED_ENV = "ABLATION_PACKED"  # set for the workers: a Ctrl-C in one of them stops the sweep (ablation.sweep.jobs)
VISIBLE = "CUDA_VISIBLE_DEVICES"
# Several processes on one GPU: each takes the memory it uses, not all of it (TensorFlow's memory growth, JAX's
# preallocation off). The packed workers get it, and the jobs of a Ray sweep that ask for GPUs (ray_cluster.py).
GPU_SHARING = {"TF_FORCE_GPU_ALLOW_GROWTH": "true", "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}


@dataclass(frozen=True)
class Devices:
    """What a packed sweep's workers share: the GPU (nvidia-smi's index) of each worker slot, and the folder of
    the slots' lock files; the Job carries it to the workers (ablation.sweep.jobs)."""
    slots: tuple[int, ...]
    folder: str


def listing() -> str | None:
    """nvidia-smi's row of every GPU (gpus.QUERY; no CUDA context is opened in the sweep's process); None
    without one."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        return subprocess.run(node.QUERY, capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def placement() -> tuple[list[node.Gpu], bool]:
    """This machine's GPUs the sweep may use, and whether each worker gets one (gpus.usable)."""
    return node.usable(listing(), os.environ.get(VISIBLE))


def jobs() -> int:
    """How many jobs run at once: on GPUs, what each one's free memory holds (gpus.Gpu.jobs), summed, at most
    one per CPU core, which feeds it; on CPUs only, one per core (each job's TensorFlow then takes one thread for
    its operations, worker_env)."""
    cores = os.cpu_count() or 1
    gpus, _ = placement()
    if gpus:
        return node.auto_jobs(gpus, cores)
    return max(1, min(MAX_JOBS, cores))


def worker_env(n_jobs: int, on_gpus: bool) -> dict[str, str]:
    """The environment the workers start with: GPU memory taken as used, not all at once (TensorFlow's memory
    growth, JAX's preallocation off), so several processes share one GPU, and CUDA's GPUs numbered as nvidia-smi
    numbers them (the workers' CUDA_VISIBLE_DEVICES names them by its index); on CPUs, the cores split between
    the jobs (TensorFlow's and the math libraries' thread pools)."""
    env = {**GPU_SHARING, PACKED_ENV: "1"}
    if on_gpus:
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    else:
        threads = str(max(1, (os.cpu_count() or 1) // max(1, n_jobs)))
        env.update(TF_NUM_INTRAOP_THREADS=threads, TF_NUM_INTEROP_THREADS="1", OMP_NUM_THREADS=threads)
    return env


def line(n_jobs: int, gpus: list[node.Gpu], counts: list[int] | None, cuda_visible_devices: str | None) -> str:
    """The sweep's first line: `packed: 16 jobs at once on 8 GPUs (2 per GPU; GPU 3: 1)`, `… on 2 CPU cores`."""
    if not gpus:
        where = f"{os.cpu_count()} CPU cores"
    elif counts is None:  # the workers keep a CUDA_VISIBLE_DEVICES the listing cannot map
        where = f"the GPUs of {VISIBLE}={cuda_visible_devices}"
    else:
        where = node.describe(gpus, counts)
        if cuda_visible_devices is not None:
            where += f", of {VISIBLE}={cuda_visible_devices}"
    return f"packed: {n_jobs} jobs at once on {where} (hydra.launcher.n_jobs=N sets it)"


def prepare(n_jobs: int) -> Devices | None:
    """Set worker_env in this process before the workers start (a value the user set wins), spread the workers
    over the GPUs, and say so. Returns the workers' GPUs (None: on CPUs, or CUDA_VISIBLE_DEVICES left as set)."""
    gpus, assign = placement()
    env = {k: v for k, v in worker_env(n_jobs, bool(gpus)).items() if k not in os.environ}
    os.environ.update(env)
    if n_jobs < 1:  # joblib's -1, -2, …: all cores, all but one, …
        n_jobs = max(1, (os.cpu_count() or 1) + 1 + n_jobs)
    counts = node.spread(gpus, n_jobs) if assign else None
    log.info(line(n_jobs, gpus, counts, os.environ.get(VISIBLE)))
    if counts is None:
        return None
    folder = tempfile.mkdtemp(prefix="ablation-gpus-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return Devices(tuple(node.slots(gpus, counts)), folder)


_held: tuple[str, object] | None = None  # (Devices.folder, the open lock file) of the slot this process took


def take_gpu(devices: Devices) -> None:
    """In a worker, before its first job imports TensorFlow or JAX: take a free slot (an exclusive lock on its
    file, held until the process ends, so a worker that replaces one that died takes its slot) and set
    CUDA_VISIBLE_DEVICES to the slot's GPU. Later jobs of the same worker keep it."""
    import fcntl

    global _held
    if _held is not None and _held[0] == devices.folder:
        return
    for slot, index in enumerate(devices.slots):
        file = open(os.path.join(devices.folder, f"slot-{slot}"), "a")  # noqa: SIM115 (held for the process)
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            file.close()
            continue
        _held = (devices.folder, file)
        os.environ[VISIBLE] = str(index)
        log.info("packed: this worker (pid %d) trains on GPU %d", os.getpid(), index)
        return
    # Every slot taken (loky started a worker while the one it replaces still ends): share a GPU.
    index = devices.slots[os.getpid() % len(devices.slots)]
    log.warning("packed: every GPU slot is taken; this worker shares GPU %d", index)
    _held = (devices.folder, None)
    os.environ[VISIBLE] = str(index)

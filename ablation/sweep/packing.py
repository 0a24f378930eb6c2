"""Several jobs of a sweep at once on one machine (`hydra/launcher=packed`): Hydra's joblib launcher with as many
worker processes as the device takes, each taking job after job, so it keeps its compiled model between runs of
one architecture (ablation/training/reuse.py), and holding only the GPU memory its runs use.

Small models leave a GPU nearly idle and a CPU's cores partly so (a step of small_cnn is mostly Python and
dispatch), so runs side by side raise a sweep's throughput; benchmarks/overhead.py (`--packing`) measures it."""
from __future__ import annotations

import logging
import os
import shutil
import subprocess

log = logging.getLogger(__name__)

# A job of the shipped models at CIFAR-10 size holds well under this on a GPU (memory growth on: what it uses).
GIB_PER_GPU_JOB = 8
MAX_JOBS = 8
LAUNCHER = "packed"
PACKED_ENV = "ABLATION_PACKED"  # set for the workers: a Ctrl-C in one of them stops the sweep (ablation.sweep.jobs)


def gpu_memory_gib() -> list[float]:
    """Each NVIDIA GPU's memory in GiB, from nvidia-smi (no CUDA context is opened in the sweep's process); []
    without one."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [int(line) / 1024 for line in out.split() if line.strip().isdigit()]


def jobs() -> int:
    """How many jobs run at once: on a GPU, what its memory holds at GIB_PER_GPU_JOB each (at most one per CPU
    core, which feeds it, and MAX_JOBS); on CPUs only, one per core (each job's TensorFlow then takes one thread
    for its operations, worker_env)."""
    cores = os.cpu_count() or 1
    gpus = gpu_memory_gib()
    if gpus:
        return max(1, min(MAX_JOBS, cores, int(gpus[0] // GIB_PER_GPU_JOB)))
    return max(1, min(MAX_JOBS, cores))


def worker_env(n_jobs: int) -> dict[str, str]:
    """The environment the workers start with: GPU memory taken as used, not all at once (TensorFlow's memory
    growth, JAX's preallocation off), so several processes share one GPU; on CPUs, the cores split between the
    jobs (TensorFlow's and the math libraries' thread pools)."""
    env = {"TF_FORCE_GPU_ALLOW_GROWTH": "true", "XLA_PYTHON_CLIENT_PREALLOCATE": "false", PACKED_ENV: "1"}
    if not gpu_memory_gib():
        threads = str(max(1, (os.cpu_count() or 1) // max(1, n_jobs)))
        env.update(TF_NUM_INTRAOP_THREADS=threads, TF_NUM_INTEROP_THREADS="1", OMP_NUM_THREADS=threads)
    return env


def prepare(n_jobs: int) -> None:
    """Set worker_env in this process before the workers start (a value the user set wins), and say so."""
    env = {k: v for k, v in worker_env(n_jobs).items() if k not in os.environ}
    os.environ.update(env)
    gpus = gpu_memory_gib()
    where = f"one GPU of {gpus[0]:.0f} GiB" if gpus else f"{os.cpu_count()} CPU cores"
    log.info("packed: %d jobs at once on %s (hydra.launcher.n_jobs=N sets it)", n_jobs, where)

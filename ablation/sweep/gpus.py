"""Which GPU each packed worker trains on (hydra/launcher=packed, ablation/sweep/packing.py): the node's GPUs as
nvidia-smi lists them, the ones CUDA_VISIBLE_DEVICES leaves visible, how many jobs each one's free memory holds,
and the spread of a sweep's jobs over them. Plain functions of nvidia-smi's text, so the recorded listings of
tests/data/nvidia_smi/ test them on a machine without a GPU."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

# nvidia-smi's physical order (PCI bus), which is also CUDA's with CUDA_DEVICE_ORDER=PCI_BUS_ID (worker_env).
QUERY = ["nvidia-smi", "--query-gpu=index,memory.total,memory.free", "--format=csv,noheader,nounits"]
# A job of the shipped models at CIFAR-10 size holds well under this on a GPU (memory growth on: what it uses).
GIB_PER_JOB = 8
MAX_JOBS_PER_GPU = 8
# What an idle GPU shows in use (the driver's own, a desktop): not counted against its jobs, so a GPU nobody uses
# takes total // GIB_PER_JOB jobs, as it did when only the total was read.
IDLE_GIB = 1


@dataclass(frozen=True)
class Gpu:
    index: int  # physical, as nvidia-smi numbers it
    total_mib: int
    free_mib: int

    @property
    def jobs(self) -> int:
        """How many jobs its memory holds: its free memory (what others hold is theirs) at GIB_PER_JOB each, at
        most MAX_JOBS_PER_GPU."""
        free_gib = min(self.total_mib, self.free_mib + IDLE_GIB * 1024) / 1024
        return min(MAX_JOBS_PER_GPU, int(free_gib // GIB_PER_JOB))


def parse(text: str) -> list[Gpu]:
    """The GPUs of nvidia-smi's QUERY output, one `index, total, free` row (MiB) each; rows it cannot read (a
    value "[N/A]", a warning line) are left out, and a free memory it cannot read counts as all of it."""
    gpus = []
    for line in text.splitlines():
        fields = [field.strip() for field in line.split(",")]
        if len(fields) != 3 or not fields[0].isdigit() or not fields[1].isdigit():
            continue
        total = int(fields[1])
        gpus.append(Gpu(int(fields[0]), total, int(fields[2]) if fields[2].isdigit() else total))
    return gpus


def visible(gpus: list[Gpu], cuda_visible_devices: str | None) -> list[Gpu] | None:
    """The GPUs a process started with CUDA_VISIBLE_DEVICES sees, in its order (CUDA renumbers them 0, 1, …):
    all without the variable; none for "" or "-1"; as CUDA does, the list ends at the first index the node does
    not have. None when an entry is not an index (a GPU's UUID, a MIG instance): which GPU it names is not in
    the listing, so the workers keep the variable as it is."""
    if cuda_visible_devices is None:
        return list(gpus)
    by_index = {gpu.index: gpu for gpu in gpus}
    entries = [entry.strip() for entry in cuda_visible_devices.split(",")]
    if any(entry and not entry.lstrip("-").isdigit() for entry in entries):
        return None
    seen: list[Gpu] = []
    for entry in entries:
        gpu = by_index.get(int(entry)) if entry else None
        if gpu is None:  # "", "-1", or a GPU the node lacks: CUDA stops here
            break
        if gpu not in seen:
            seen.append(gpu)
    return seen


def usable(listing: str | None, cuda_visible_devices: str | None) -> tuple[list[Gpu], bool]:
    """The GPUs a packed sweep counts its jobs on, and whether it gives each worker one of them: nvidia-smi's
    listing (None: no nvidia-smi) read through CUDA_VISIBLE_DEVICES. No GPU listed or visible: ([], False), the
    CPU's packing. A CUDA_VISIBLE_DEVICES of UUIDs: the first GPU listed counts (as before the spread) and the
    workers keep the variable."""
    gpus = parse(listing or "")
    seen = visible(gpus, cuda_visible_devices)
    if seen is None:
        return gpus[:1], False
    return seen, bool(seen)


def auto_jobs(gpus: list[Gpu], cores: int) -> int:
    """How many jobs run at once on these GPUs: each one's own, summed; at most one per CPU core (which feeds
    it), at least one."""
    return max(1, min(cores, sum(gpu.jobs for gpu in gpus)))


def spread(gpus: list[Gpu], n_jobs: int) -> list[int]:
    """How many of n_jobs workers train on each GPU (in the order of gpus): one at a time to the GPU with the
    fewest that still has room (ties: the most free memory, then the listing's order), so a GPU others partly use
    gets fewer; once every GPU is full (an n_jobs set by hand), the rest go evenly over what is above each one's
    room."""
    counts = [0] * len(gpus)
    for _ in range(n_jobs if gpus else 0):
        room = [i for i, gpu in enumerate(gpus) if counts[i] < gpu.jobs]
        order = (lambda i: (counts[i], -gpus[i].free_mib, i)) if room else \
            (lambda i: (counts[i] - gpus[i].jobs, -gpus[i].free_mib, i))
        counts[min(room or range(len(gpus)), key=order)] += 1
    return counts


def slots(gpus: list[Gpu], counts: list[int]) -> list[int]:
    """The GPU index of each worker slot, taking turns over the GPUs (GPU 0, 1, …, 0, 1, …), so that the first
    workers to take a job, when a batch has fewer jobs than workers, land on different GPUs."""
    left = list(counts)
    order: list[int] = []
    while any(left):
        for i, gpu in enumerate(gpus):
            if left[i]:
                order.append(gpu.index)
                left[i] -= 1
    return order


def describe(gpus: list[Gpu], counts: list[int]) -> str:
    """Where the jobs run, for the sweep's first line: `8 GPUs (2 per GPU; GPU 3: 1, GPU 0: 3)`, `GPU 1`."""
    if len(gpus) == 1:
        gpu = gpus[0]
        return f"GPU {gpu.index} ({gpu.total_mib / 1024:.0f} GiB, {gpu.free_mib / 1024:.0f} GiB free)"
    used = sum(1 for count in counts if count)
    where = f"{len(gpus)} GPUs" if used == len(gpus) else f"{used} of {len(gpus)} GPUs"
    usual = Counter(counts).most_common(1)[0][0]
    others = ", ".join(f"GPU {gpu.index}: {count}" for gpu, count in zip(gpus, counts) if count != usual)
    return f"{where} ({usual} per GPU{'; ' + others if others else ''})"

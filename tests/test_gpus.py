"""hydra/launcher=packed on nodes of several GPUs: jobs per GPU from each one's free memory, CUDA_VISIBLE_DEVICES
respected, the workers spread (ablation/sweep/gpus.py), from recorded nvidia-smi listings (tests/data/nvidia_smi/);
and real joblib (loky) workers that each take a GPU before their first job and keep it."""
import os
import stat
import time
from pathlib import Path

import pytest
from joblib import Parallel, delayed

from ablation.sweep import gpus, jobs, packing

LISTINGS = Path(__file__).parent / "data" / "nvidia_smi"


def listing(name: str) -> str:
    return (LISTINGS / name).read_text()


def test_every_row_of_the_listing_is_read():
    assert gpus.parse(listing("a100_40gb_x1.csv")) == [gpus.Gpu(0, 40960, 40337)]
    assert [g.index for g in gpus.parse(listing("h100_x8_idle.csv"))] == list(range(8))
    shared = gpus.parse(listing("h100_x8_shared.csv"))
    assert (shared[3].free_mib, shared[5].free_mib) == (9324, 40044)
    # What nvidia-smi may print besides the rows: a value it cannot read, a warning line.
    assert gpus.parse("0, 16384, [N/A]\nWARNING: infoROM is corrupted at gpu 0000:65:00.0\n") == \
        [gpus.Gpu(0, 16384, 16384)]
    assert gpus.parse("") == []


@pytest.mark.parametrize("name,per_gpu", [
    ("a100_40gb_x1.csv", [5]),            # 40 GiB at 8 GiB a job: the one-GPU rule of before
    ("rtx3090_x2.csv", [3, 3]),
    ("h100_x8_idle.csv", [8] * 8),        # 79 GiB holds 9: at most 8 a GPU
    ("h100_x8_shared.csv", [8, 8, 8, 1, 8, 5, 8, 8]),  # what others hold is theirs
])
def test_jobs_per_gpu_from_its_own_free_memory(name, per_gpu):
    assert [g.jobs for g in gpus.parse(listing(name))] == per_gpu


def test_an_idle_gpu_counts_its_whole_memory_and_a_nearly_full_one_none():
    assert gpus.Gpu(0, 16384, 15900).jobs == 2  # the driver's 0.5 GiB does not cost a job
    assert gpus.Gpu(0, 16384, 15000).jobs == 1
    assert gpus.Gpu(0, 81559, 3000).jobs == 0
    full = [gpus.Gpu(0, 81559, 3000), gpus.Gpu(1, 81559, 5000)]
    assert gpus.auto_jobs(full, 16) == 1 and gpus.spread(full, 1) == [0, 1]  # one job, where most is free


@pytest.mark.parametrize("name,cores,n_jobs,counts,line", [
    ("a100_40gb_x1.csv", 16, 5, [5], "5 jobs at once on GPU 0 (40 GiB, 39 GiB free)"),
    ("a100_40gb_x1.csv", 2, 2, [2], "2 jobs at once on GPU 0"),                  # one job per core at most
    ("rtx3090_x2.csv", 16, 6, [3, 3], "6 jobs at once on 2 GPUs (3 per GPU)"),
    ("rtx3090_x2.csv", 5, 5, [2, 3], "5 jobs at once on 2 GPUs (2 per GPU; GPU 1: 3)"),  # more free memory
    ("h100_x8_idle.csv", 16, 16, [2] * 8, "16 jobs at once on 8 GPUs (2 per GPU)"),
    ("h100_x8_idle.csv", 128, 64, [8] * 8, "64 jobs at once on 8 GPUs (8 per GPU)"),
    ("h100_x8_shared.csv", 16, 16, [3, 2, 2, 1, 2, 2, 2, 2],
     "16 jobs at once on 8 GPUs (2 per GPU; GPU 0: 3, GPU 3: 1)"),
    ("h100_x8_shared.csv", 128, 54, [8, 8, 8, 1, 8, 5, 8, 8],
     "54 jobs at once on 8 GPUs (8 per GPU; GPU 3: 1, GPU 5: 5)"),
])
def test_the_jobs_of_a_node_are_each_gpus_summed_and_spread_evenly(name, cores, n_jobs, counts, line):
    node = gpus.parse(listing(name))
    assert gpus.auto_jobs(node, cores) == n_jobs
    assert gpus.spread(node, n_jobs) == counts
    assert line in packing.line(n_jobs, node, counts, None)


def test_n_jobs_set_by_hand_is_spread_as_the_gpus_room_allows():
    shared = gpus.parse(listing("h100_x8_shared.csv"))
    assert gpus.spread(shared, 8) == [1] * 8
    assert gpus.spread(shared, 3) == [1, 1, 1, 0, 0, 0, 0, 0]
    assert packing.line(3, shared, gpus.spread(shared, 3), None).startswith(
        "packed: 3 jobs at once on 3 of 8 GPUs (0 per GPU; GPU 0: 1, GPU 1: 1, GPU 2: 1)")
    assert gpus.spread(shared, 20) == [3, 3, 3, 1, 3, 2, 3, 2]
    # Beyond every GPU's room (54 here): the rest evenly above each one's room.
    assert gpus.spread(shared, 70) == [10, 10, 10, 3, 10, 7, 10, 10]
    assert gpus.spread(gpus.parse(listing("a100_40gb_x1.csv")), 7) == [7]
    assert gpus.spread([], 4) == []


def test_no_gpu_keeps_the_cpus_packing():
    assert gpus.usable(None, None) == ([], False)                         # no nvidia-smi
    assert gpus.usable(listing("h100_x8_idle.csv"), "-1") == ([], False)  # GPUs hidden on purpose
    assert gpus.usable(listing("h100_x8_idle.csv"), "") == ([], False)
    assert packing.line(2, [], None, None) == \
        f"packed: 2 jobs at once on {os.cpu_count()} CPU cores (hydra.launcher.n_jobs=N sets it)"


def test_cuda_visible_devices_keeps_its_subset_and_the_workers_get_physical_indices():
    text = listing("h100_x8_shared.csv")
    subset, assign = gpus.usable(text, "2,5")
    assert assign and [g.index for g in subset] == [2, 5]
    counts = gpus.spread(subset, gpus.auto_jobs(subset, 16))
    assert counts == [8, 5]
    slots = gpus.slots(subset, counts)
    assert sorted(set(slots)) == [2, 5] and slots.count(2) == 8 and slots.count(5) == 5
    assert slots[:2] == [2, 5]  # the first workers to start land on different GPUs
    assert "13 jobs at once on 2 GPUs (8 per GPU; GPU 5: 5), of CUDA_VISIBLE_DEVICES=2,5" in \
        packing.line(13, subset, counts, "2,5")
    # CUDA's own reading: its order, duplicates once, the list ends at an index the node lacks.
    assert [g.index for g in gpus.usable(text, "5, 2")[0]] == [5, 2]
    assert [g.index for g in gpus.usable(text, "1,1,9,3")[0]] == [1]
    # GPUs named by UUID: not in the listing, so the workers keep the variable; the first GPU counts the jobs.
    assert gpus.usable(text, "GPU-8a5e7b0c-0000-0000-0000-000000000000") == (gpus.parse(text)[:1], False)


def test_slots_take_turns_over_the_gpus():
    node = gpus.parse(listing("h100_x8_shared.csv"))
    assert gpus.slots(node, [3, 2, 2, 1, 2, 2, 2, 2]) == [0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 4, 5, 6, 7, 0]


# ---------------------------------------------------------------------------------------------------------
# The sweep's process: nvidia-smi's query as the code runs it

@pytest.fixture
def environment():
    """packing.prepare sets the workers' variables in this process: put them back."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def _nvidia_smi(folder: Path, name: str) -> None:
    """An nvidia-smi on PATH that prints a recorded listing, and only for the query the recording answers."""
    script = folder / "nvidia-smi"
    script.write_text(f'#!/bin/sh\n[ "$*" = "{" ".join(gpus.QUERY[1:])}" ] || exit 6\ncat "{LISTINGS / name}"\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    os.environ["PATH"] = f"{folder}{os.pathsep}{os.environ['PATH']}"


def test_prepare_spreads_the_workers_over_the_listed_gpus(tmp_path, environment, caplog):
    _nvidia_smi(tmp_path, "h100_x8_shared.csv")
    for key in (packing.VISIBLE, "TF_NUM_INTRAOP_THREADS", "CUDA_DEVICE_ORDER"):
        os.environ.pop(key, None)
    caplog.set_level("INFO", logger=packing.__name__)
    devices = packing.prepare(8)
    assert devices is not None and devices.slots == (0, 1, 2, 3, 4, 5, 6, 7)
    assert os.environ["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"  # CUDA numbers the GPUs as nvidia-smi does
    assert "TF_NUM_INTRAOP_THREADS" not in os.environ  # the cores are split on CPUs only
    assert "packed: 8 jobs at once on 8 GPUs (1 per GPU)" in caplog.text
    assert packing.jobs() == gpus.auto_jobs(gpus.parse(listing("h100_x8_shared.csv")), os.cpu_count() or 1)

    os.environ[packing.VISIBLE] = "5,2"
    devices = packing.prepare(3)
    assert devices is not None and devices.slots == (5, 2, 2)  # the third on the GPU with more free memory


def test_without_nvidia_smi_prepare_packs_the_cpu(tmp_path, environment, caplog):
    os.environ["PATH"] = str(tmp_path)  # no nvidia-smi on it
    for key in ("TF_NUM_INTRAOP_THREADS", "OMP_NUM_THREADS", "CUDA_DEVICE_ORDER"):
        os.environ.pop(key, None)
    caplog.set_level("INFO", logger=packing.__name__)
    assert packing.prepare(2) is None
    assert "packed: 2 jobs at once on" in caplog.text and "CPU cores" in caplog.text
    assert os.environ["TF_NUM_INTRAOP_THREADS"] == str(max(1, (os.cpu_count() or 1) // 2))
    assert "CUDA_DEVICE_ORDER" not in os.environ


# ---------------------------------------------------------------------------------------------------------
# The workers: joblib's loky processes, as hydra/launcher=packed starts them, each given its GPU by the Job

def _meet(folder: str, cfg):
    """A job that waits until two workers have one each (so both workers take a job), then says where it ran."""
    Path(folder, str(os.getpid())).touch()
    deadline = time.monotonic() + 120
    while len(os.listdir(folder)) < 2:
        if time.monotonic() > deadline:
            raise TimeoutError("the other worker never took a job")
        time.sleep(0.05)
    return os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES")


def _where(cfg):
    return os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES")


def test_each_worker_takes_its_gpu_before_its_first_job_and_keeps_it(tmp_path, monkeypatch):
    import functools

    met = tmp_path / "met"
    met.mkdir()
    devices = packing.Devices(slots=(2, 5), folder=str(tmp_path))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")  # what the workers inherit: the user's subset
    first = jobs.Job(functools.partial(_meet, str(met)), fresh_process=False, devices=devices)
    then = jobs.Job(_where, fresh_process=False, devices=devices)
    with Parallel(n_jobs=2, backend="loky") as parallel:
        met_at = parallel(delayed(first)({}) for _ in range(2))
        later = parallel(delayed(then)({}) for _ in range(8))
    gpu_of = dict(met_at)
    assert sorted(gpu_of.values()) == ["2", "5"]  # two workers, one GPU each
    for pid, gpu in later:  # job after job on the same GPU
        assert gpu_of[pid] == gpu
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "2,5"  # the sweep's process took none


def test_a_fresh_process_per_job_inherits_the_workers_gpu(tmp_path, monkeypatch):
    """hydra.sweeper.fresh_process=true under packed: the job's own process starts with its worker's GPU."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from conftest import compose_config

    cfg = compose_config(hydra=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(tmp_path)
        cfg.hydra.job.name = "job"
    monkeypatch.setattr(HydraConfig.instance(), "cfg", HydraConfig.instance().cfg)
    HydraConfig.instance().set_config(cfg)
    monkeypatch.setattr(packing, "_held", None)  # as in a worker that has taken no GPU yet
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    job = jobs.Job(_where, fresh_process=True, devices=packing.Devices(slots=(5,), folder=str(tmp_path)))
    pid, gpu = job({})
    assert pid != os.getpid() and gpu == "5"


def test_a_worker_takes_the_slot_a_dead_one_left_and_shares_a_gpu_when_none_is_free(tmp_path, monkeypatch, caplog):
    import fcntl

    devices = packing.Devices(slots=(0, 3), folder=str(tmp_path))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    held = []
    for slot in (0, 1):  # two workers hold the slots (flock: each open file its own lock)
        file = open(tmp_path / f"slot-{slot}", "a")  # noqa: SIM115
        fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.append(file)
    monkeypatch.setattr(packing, "_held", None)
    packing.take_gpu(devices)
    assert os.environ["CUDA_VISIBLE_DEVICES"] in ("0", "3") and "shares GPU" in caplog.text
    held[1].close()  # the worker on GPU 3 ends: the one loky starts in its place takes its slot
    monkeypatch.setattr(packing, "_held", None)
    packing.take_gpu(devices)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    held[0].close()
    packing.take_gpu(devices)  # this worker keeps its GPU for its later jobs, though slot 0 is free now
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"

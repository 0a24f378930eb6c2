"""Every shipped experiment (ablation/conf/experiment/*.yaml) as `python -m ablation -m experiment=NAME` would run
it: composed, its sweep (hydra.sweeper.params) expanded into jobs the way the ablation sweeper expands them
(Hydra's override parser, BasicSweeper.split_arguments, then the design: ablation.sweep.designs.jobs_of), and every
job's config planned and its report settings checked, as the sweeper's own validation does before anything trains.
A typo in an experiment file (an option that does not exist, a key the config lacks, a bad value or combination)
fails here, not when its sweep starts. Nothing trains and no data is read: planning decides from the config."""
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from ablation.core import compat, paths
from ablation.core.errors import user_error
from ablation.report.settings import check as check_report_settings
from ablation.sweep import designs
from ablation.training.plan import plan
from conftest import CONF, options

SHIPPED = {"albu_mixed_loo", "digits_ablation", "digits_library", "generative_vs_classic", "models_ablation",
           "offline_vs_online", "quick", "rotate_strength", "shapes_ablation"}


def test_every_experiment_file_is_checked():
    """The parametrization below is the folder's files, the folder the package composes from: a new experiment
    is checked without being listed, and none of these can drop out unnoticed."""
    assert CONF == paths.CONF
    assert SHIPPED <= set(options("experiment"))
    assert options("experiment") == sorted(p.stem for p in (paths.CONF / "experiment").glob("*.yaml"))


def _grid(name: str):
    """The experiment's config with its hydra node, and its sweep's jobs before the design: each job's override
    list, as AblationSweeper.sweep makes it from hydra.sweeper.params and the command line's overrides."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        master = compose("config", overrides=[f"experiment={name}"], return_hydra_config=True)
        params = [f"{key}={value}" for key, value in (master.hydra.sweeper.params or {}).items()]
        # The config loader lists a group's options for glob(*) (digits_library's augmentation: glob(*)).
        parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
        split = compat.basic_sweeper().split_arguments(parser.parse_overrides([*params, f"experiment={name}"]), None)
    return master, [job for batch in split for job in batch]


def _leaves(node, prefix=""):
    """The dotted keys of a config's values: lists and scalars are leaves, mappings are walked."""
    for key, value in node.items():
        path = f"{prefix}{key}"
        if OmegaConf.is_dict(value) and len(value):
            yield from _leaves(value, f"{path}.")
        else:
            yield path


def _unknown_keys(name: str) -> list[str]:
    """Keys the experiment file sets that the config it overrides lacks (with the same group options chosen).
    Hydra adds such a key without a word when it merges a config file, so `early_stoping: {enabled: true}`
    would leave early stopping off and still compose and plan."""
    own = OmegaConf.load(CONF / "experiment" / f"{name}.yaml")
    choices = [f"{group.removeprefix('override /')}={option}" for entry in own.get("defaults", [])
               for group, option in entry.items()]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        base = compose("config", overrides=choices)
    missing = object()
    return [key for key in _leaves(OmegaConf.masked_copy(own, [k for k in own if k not in ("defaults", "hydra")]))
            if OmegaConf.select(base, key, default=missing) is missing]


def _seed(job: list[str]) -> int | None:
    values = [o.partition("=")[2] for o in job if o.partition("=")[0] == "seed"]
    return int(values[-1]) if values else None


@pytest.mark.parametrize("name", options("experiment"))
def test_an_experiment_composes_and_every_job_of_its_sweep_plans(name):
    master, grid = _grid(name)
    assert master.experiment_name == name and master.hydra.sweeper.params, f"experiment/{name}.yaml: no sweep"
    assert master.hydra.runtime.choices.get("hydra/sweeper") == "ablation"
    assert not _unknown_keys(name), f"experiment/{name}.yaml sets keys the config does not have"
    jobs = designs.jobs_of(grid, master)  # the design's jobs, each composed from the packaged configs
    assert len(jobs) >= len(grid) and all(f"experiment={name}" in job for job in jobs)
    # Composing costs far more than planning, and the jobs of a sweep differ by their seed in tens: each job
    # without its seed is composed once, and each seed then set as Hydra sets a value override (OmegaConf.update).
    # The last job is also composed in full and must give the same config, so the shortcut hides nothing.
    groups: dict[tuple[str, ...], list[list[str]]] = {}
    for job in jobs:
        groups.setdefault(tuple(o for o in job if o.partition("=")[0] != "seed"), []).append(job)
    bad, keys, checked_in_full = [], {}, False
    for members in groups.values():
        try:
            composed = designs.compose_job(members[0])
        except Exception as exc:
            if not user_error(exc):
                raise
            bad += [f"[{' '.join(job)}] {exc}" for job in members]
            continue
        cfg = OmegaConf.masked_copy(composed, [key for key in composed if key != "hydra"])  # as the job sees it
        for job in members:
            if _seed(job) is not None:
                OmegaConf.update(cfg, "seed", _seed(job), merge=True)
            if job is jobs[-1]:
                full = designs.compose_job(job)
                assert OmegaConf.to_container(cfg) == OmegaConf.to_container(
                    OmegaConf.masked_copy(full, [key for key in full if key != "hydra"])), job
                checked_in_full = True
            try:
                keys[plan(cfg).key] = job  # every setting and every rule between settings
                check_report_settings(cfg)  # the report the sweep ends in
            except Exception as exc:
                if not user_error(exc):
                    raise
                bad.append(f"[{' '.join(job)}] {exc}")
    assert not bad, f"experiment/{name}.yaml:\n" + "\n".join(bad)
    assert checked_in_full
    # Each job is a combination of its own: an override that changed nothing would run one combination twice.
    assert len(keys) == len(jobs), f"experiment/{name}.yaml: {len(jobs)} jobs, {len(keys)} distinct combinations"

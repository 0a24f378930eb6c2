"""Driven by the registry: every option of every config group composes into a run config that passes the
config check, and every model option builds. A new option file is tested here without editing this module,
and a new config group fails the completeness check until it is covered."""
import numpy as np
import pytest

from ablation import tracking
from ablation.training import config, models, tasks
from ablation.training.plan import plan
from conftest import CONF, options

# Group -> where its options are tested. dataset options need data to point at: tests/test_datasets.py
# (SOURCES) composes, checks and loads each one; experiment options are sweeps: tests/test_sweep.py.
COVERED = {
    "augmentation": "here",
    "model": "here",
    "trainer": "here",
    "tracking": "here",
    "lenses": "here",
    "task": "here",
    "report": "here",
    "sweep": "here",
    "dataset": "tests/test_datasets.py",
    "experiment": "tests/test_sweep.py",
    "paths": "tests/test_paths.py",
    "synthetic": "tests/test_generative.py",
}


def test_every_config_group_is_covered():
    groups = {p.name for p in CONF.iterdir() if p.is_dir() and any(p.glob("*.yaml"))}
    assert groups == set(COVERED), f"config groups without registry tests: {sorted(groups - set(COVERED))}"
    for group in COVERED:
        assert options(group), f"{CONF / group} has no options"


@pytest.mark.parametrize("option", options("model"))
def test_every_model_option_has_a_factory(option, make_cfg):
    cfg = make_cfg(f"model={option}")
    assert cfg.model.name == option, f"conf/model/{option}.yaml: name must be the file's name"
    assert callable(getattr(models, f"build_{option}", None)), f"ablation.training.models has no build_{option}"
    models.check(cfg.model)


def _smallest_size(model_cfg, channels: int) -> int:
    """The smallest square image the config check lets this model take (8 px is every dataset's minimum)."""
    for size in range(8, 257):
        try:
            models.check_input(model_cfg, (size, size, channels))
            return size
        except config.ConfigError:
            continue
    raise AssertionError(f"model {model_cfg.name}: no image size up to 256 px passes models.check_input")


@pytest.mark.parametrize("option", options("model"))
def test_every_model_option_builds_at_its_smallest_size(option, make_cfg):
    cfg = make_cfg(f"model={option}")
    task = "reconstruct" if models.image_to_image(option) else "classify"
    size = _smallest_size(cfg.model, 3)
    model = models.build(cfg.model, (size, size, 3), 3, task=task)
    x = np.random.default_rng(0).integers(0, 256, (2, size, size, 3), dtype=np.uint8)
    out = np.asarray(model(x, training=False))
    assert out.shape == ((2, size, size, 3) if task == "reconstruct" else (2, 3)), (option, size)
    assert np.all(np.isfinite(out))


@pytest.mark.parametrize("option", options("trainer"))
def test_every_trainer_option_composes_and_passes_the_config_check(option, make_cfg):
    cfg = make_cfg(f"trainer={option}", smoke=False)
    config.validate(cfg)


@pytest.mark.parametrize("option", options("lenses"))
def test_every_lenses_option_composes_and_passes_the_config_check(option, make_cfg):
    cfg = make_cfg(f"lenses={option}")
    config.validate(cfg)
    assert set(cfg.lenses) == {"per_class", "affinity", "corruptions", "severities", "corruption_images"}


@pytest.mark.parametrize("option", options("tracking"))
def test_every_tracking_option_composes_and_passes_the_config_check(option, make_cfg):
    cfg = make_cfg(f"tracking={option}", store=False)  # the option's own store settings
    config.validate(cfg)
    uri, _ = tracking.store(cfg.tracking)
    assert uri.split("://")[0] in ("sqlite", "http", "https", "postgresql", "file"), uri
    assert isinstance(cfg.tracking.log_model, bool)


@pytest.mark.parametrize("option", options("augmentation"))
def test_every_augmentation_option_composes_and_passes_the_config_check(option, make_cfg):
    cfg = make_cfg(f"augmentation={option}")
    assert config.validate(cfg) is not None  # the policy, built and tried once on a blank image of the data's shape


@pytest.mark.parametrize("option", options("task"))
def test_every_task_option_composes_and_plans(option, make_cfg):
    model = [] if option == "classify" else ["model=conv_autoencoder"]
    cfg = make_cfg(f"task={option}", *model)
    assert cfg.task.name == option, f"conf/task/{option}.yaml: name must be the file's name"
    assert option in tasks.TASKS
    assert plan(cfg).task == option


@pytest.mark.parametrize("option", options("report"))
def test_every_report_option_composes_and_passes_the_report_check(option, make_cfg):
    from ablation.report.settings import check

    check(make_cfg(f"report={option}"))


@pytest.mark.parametrize("option", options("sweep"))
def test_every_sweep_option_composes_into_a_design_and_its_levels(option, make_cfg):
    from ablation.sweep import designs

    cfg = make_cfg(f"sweep={option}")
    assert set(cfg.sweep) == {"design", "levels", "rerun", "seeds", "sequential"} and isinstance(cfg.sweep.rerun, bool)
    assert cfg.sweep.design in designs.DESIGNS
    # Seeds on demand: fixed or auto, and looks that plan for a sweep of 10 seeds.
    from ablation.sweep import rounds

    rounds.auto(cfg)
    jobs = [["augmentation=none", f"seed={s}"] for s in range(10)]
    assert rounds.Rounds.of(cfg, jobs, [str(s) for s in range(10)]).schedule.seeds[-1] == 10
    assert designs.levels([], cfg)  # the levels a strength design runs, checked
    assert designs.jobs_of([["augmentation=rotate"]], cfg)

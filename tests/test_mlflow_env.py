"""MLflow's own environment: MLFLOW_TRACKING_URI and MLFLOW_EXPERIMENT_NAME where the config leaves the store and
the experiment unset (command line > config > environment > the embedded default), the credentials of a server
with basic authentication (MLFLOW_TRACKING_USERNAME/PASSWORD), and several sweeps in one experiment: each parent
run records its source and its definition, and its report holds exactly its own sweep."""
import base64
import json
import os
import subprocess
import sys
import urllib.request
import uuid

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from ablation import tracking
from ablation.core import paths
from ablation.report import build as report
from conftest import ROOT, compose_config
from helpers import mlflow_server, parents_and_children, run_sweep, runs, store_uri

CREDENTIALS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_URI",
               "MLFLOW_EXPERIMENT_NAME")
# A small sweep: two policies, one seed, one epoch, the lenses and the model artifact off.
SMALL = ["trainer=smoke", "trainer.epochs=1", "dataset.train_size=64", "seed=0", "lenses.corruptions=[]",
         "lenses.affinity=false", "tracking.log_model=false"]


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CREDENTIALS}
    return {**env, **extra}


# ---------------------------------------------------------------------------------------------------------
# The environment's place in the order

def test_mlflow_tracking_uri_is_the_store_when_the_config_leaves_it_unset_and_the_command_line_wins(
        tmp_path, monkeypatch):
    env_uri = f"sqlite:///{tmp_path / 'env' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env_uri)
    monkeypatch.setenv(paths.HOME_ENV, str(tmp_path / "home"))  # where the embedded default would go
    cfg = compose_config("experiment_name=from-env")
    assert cfg.tracking.uri is None
    assert tracking.store(cfg.tracking)[0] == f"{env_uri}?timeout=60"
    with tracking.run(cfg, "env/run", {"seed": 0}) as tracker:
        tracker.log_metrics({"test/loss": 1.0})
    assert [r.info.run_name for r in runs(env_uri, "from-env")] == ["env/run"]
    assert not paths.store_file().exists()

    cli_uri = f"sqlite:///{tmp_path / 'cli' / 'mlflow.db'}"
    cfg = compose_config(f"tracking.uri={cli_uri}", "experiment_name=from-env")
    with tracking.run(cfg, "cli/run", {"seed": 0}):
        pass
    assert [r.info.run_name for r in runs(cli_uri, "from-env")] == ["cli/run"]
    assert [r.info.run_name for r in runs(env_uri, "from-env")] == ["env/run"]

    # Unset (or empty), the embedded store under the home folder again.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    assert tracking.store(compose_config().tracking)[0].startswith(f"sqlite:///{paths.store_file()}")


def test_mlflow_experiment_name_comes_after_the_command_line_and_the_experiment_config(monkeypatch):
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    assert compose_config().experiment_name == compose_config().dataset.name
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "team")
    assert compose_config().experiment_name == "team"
    assert compose_config("experiment=quick").experiment_name == "quick"
    assert compose_config("experiment_name=mine").experiment_name == "mine"


# ---------------------------------------------------------------------------------------------------------
# A server with basic authentication

ADMIN_PASSWORD = f"admin-{uuid.uuid4().hex}"


def _request(uri: str, endpoint: str, body: dict, user: str, password: str) -> int:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    request = urllib.request.Request(f"{uri}{endpoint}", data=json.dumps(body).encode(), method="POST",
                                     headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    """`mlflow server --app-name basic-auth` on a free loopback port, with its own backend store, users database
    and artifact folder; one user besides the admin. Stopped at the end."""
    folder = tmp_path_factory.mktemp("auth-server")
    ini = folder / "basic_auth.ini"
    ini.write_text("[mlflow]\ndefault_permission = READ\n"
                   f"database_uri = sqlite:///{folder / 'auth.db'}\n"
                   f"admin_username = admin\nadmin_password = {ADMIN_PASSWORD}\n"
                   "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    env = _clean_env(MLFLOW_AUTH_CONFIG_PATH=str(ini), MLFLOW_FLASK_SERVER_SECRET_KEY=uuid.uuid4().hex)
    with mlflow_server(folder, "--app-name", "basic-auth", env=env, what="basic-auth mlflow server") as uri:
        password = f"alice-{uuid.uuid4().hex}"
        assert _request(uri, "/api/2.0/mlflow/users/create", {"username": "alice", "password": password},
                        "admin", ADMIN_PASSWORD) == 200
        yield {"uri": uri, "user": "alice", "password": password}


def _admin(uri: str, monkeypatch) -> MlflowClient:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN_PASSWORD)
    return MlflowClient(tracking_uri=uri)


@pytest.mark.slow
def test_wrong_credentials_are_one_line_naming_the_variables_before_any_run(auth_server, tmp_path, monkeypatch):
    result = subprocess.run(
        [sys.executable, "-m", "ablation", "-m", "augmentation=none,hflip", *SMALL, "experiment_name=denied",
         f"tracking.uri={auth_server['uri']}", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        cwd=ROOT, env=_clean_env(MLFLOW_TRACKING_USERNAME=auth_server["user"], MLFLOW_TRACKING_PASSWORD="wrong"),
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert errors[0].startswith(f"error: tracking.uri: the MLflow server at {auth_server['uri']} refused the "
                                "credentials (HTTP 401"), errors[0]
    assert "MLFLOW_TRACKING_USERNAME" in errors[0] and "MLFLOW_TRACKING_PASSWORD" in errors[0]
    assert "Traceback" not in result.stderr
    assert _admin(auth_server["uri"], monkeypatch).get_experiment_by_name("denied") is None  # nothing was created


@pytest.mark.slow
def test_a_sweep_reaches_a_server_with_basic_auth_through_the_environment(auth_server, tmp_path, monkeypatch):
    """Store, experiment and credentials all from MLflow's own variables: nothing about them on the command line."""
    experiment = f"auth-{uuid.uuid4().hex[:8]}"
    result = subprocess.run(
        [sys.executable, "-m", "ablation", "-m", "augmentation=none,hflip", *SMALL,
         f"hydra.sweep.dir={tmp_path / 'sweep'}", f"paths.reports={tmp_path / 'reports'}"],
        cwd=ROOT, env=_clean_env(MLFLOW_TRACKING_URI=auth_server["uri"], MLFLOW_EXPERIMENT_NAME=experiment,
                                 MLFLOW_TRACKING_USERNAME=auth_server["user"],
                                 MLFLOW_TRACKING_PASSWORD=auth_server["password"]),
        capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert "2 trained, 0 skipped" in result.stdout
    client = _admin(auth_server["uri"], monkeypatch)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None
    parents, children = parents_and_children(client.search_runs([exp.experiment_id], max_results=100))
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(r.info.run_name for r in children) == ["hflip/small_cnn/s0", "none/small_cnn/s0"]
    assert all(r.info.status == "FINISHED" for r in children)
    # The report, built from the server at the end of the sweep, was uploaded through it to the parent.
    assert f"{experiment}/summary.csv" in {a.path for a in client.list_artifacts(parents[0].info.run_id, experiment)}


# ---------------------------------------------------------------------------------------------------------
# One experiment, many sweeps

def _augmentations(cfg, parent: str | None = None) -> set[str]:
    finished, _, _ = report.runs_of(cfg, parent)
    return set(finished["augmentation"])


@pytest.mark.slow
def test_sweeps_in_one_experiment_report_by_parent_or_by_experiment(tmp_path):
    common = [*SMALL, "experiment_name=team"]
    first = run_sweep(tmp_path, "augmentation=none,hflip", *common, name="first")
    assert first.returncode == 0, first.stderr[-3000:]
    second = run_sweep(tmp_path, "augmentation=none,vflip", *common, name="second")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "1 trained, 1 skipped" in second.stdout  # `none` finished in the first sweep
    # The first sweep again, its overrides in another order: the same definition, so the same hash.
    again = run_sweep(tmp_path, "augmentation=hflip,none", *reversed(common), name="again")
    assert again.returncode == 0, again.stderr[-3000:]

    uri = store_uri(tmp_path)
    parents, _ = parents_and_children(runs(uri, "team"))
    assert len(parents) == 3 and len({p.data.tags["sweep_hash"] for p in parents}) == 2
    first_parent, second_parent, again_parent = sorted(parents, key=lambda p: p.info.start_time)
    assert first_parent.data.tags["sweep_hash"] == again_parent.data.tags["sweep_hash"]
    assert first_parent.data.tags["sweep_hash"] != second_parent.data.tags["sweep_hash"]
    # Run from this checkout: each parent names a commit of its history (HEAD then; a commit since is fine).
    for parent in parents:
        commit = parent.data.tags.get("mlflow.source.git.commit", "")
        assert len(commit) == 40, parent.data.tags
        assert subprocess.run(["git", "merge-base", "--is-ancestor", commit, "HEAD"], cwd=ROOT).returncode == 0

    cfg = compose_config(f"tracking.uri={uri}", "experiment_name=team")
    assert _augmentations(cfg, first_parent.info.run_id) == {"none", "hflip"}
    assert _augmentations(cfg, second_parent.info.run_id) == {"none", "vflip"}  # its `none`: the first sweep's run
    assert _augmentations(cfg, again_parent.info.run_id) == {"none", "hflip"}  # trained nothing, skipped it all
    assert _augmentations(cfg) == {"none", "hflip", "vflip"}
    # The report each sweep logged to its parent at its end holds that sweep only.
    client = MlflowClient(tracking_uri=uri)
    for parent, expected in ((first_parent, {"none", "hflip"}), (second_parent, {"none", "vflip"})):
        path = client.download_artifacts(parent.info.run_id, "team/summary.csv", str(tmp_path / parent.info.run_id))
        assert set(pd.read_csv(path)["augmentation"]) == expected

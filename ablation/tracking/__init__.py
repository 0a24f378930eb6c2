"""The only package that talks to MLflow.

    store     where the store is (URI, artifact root), the SQLite store's preparation, a server's health
    context   where a run comes from (MLflow's context tags: user, source, git commit) and library versions
    inputs    the data a run used as MLflow datasets (log_input records: name, digest, source, split)
    connect   an MlflowClient for a `tracking` config node (prepared, reachable, journals replayed)
    identity  flat params and the combination's key (config_hash) that makes sweeps resumable
    tracker   Tracker (logging into one open run) and run() (its lifecycle: FINISHED, FAILED or KILLED)
    journal   what a run keeps locally while its server is away; replay sends it later
    heartbeat a RUNNING run's proof of life (tag heartbeat), refreshed by a daemon thread while the run is open
    process   which process and host a run belongs to, and whether it is alive (pid here, heartbeat anywhere)
    bulk      reading many runs: every page of a search, metric histories in parallel against a server
    orphan    a sweep whose process ended before its jobs: orphaned, how far it got, who closes it (claim)
    runs      an experiment's runs: the finished one of a combination, a sweep's parent (its source and definition)
              and children, reading back
    model     a run's model as an MLflow Model (LoggedModel): logged, found, loaded, registered

Callers import from here; the modules above import each other only downwards in this list.
"""
from ablation.core.errors import StoreUnavailable
from ablation.tracking import orphan
from ablation.tracking.connect import client
from ablation.tracking.identity import EXECUTION_KEYS, NOT_IDENTITY, config_hash, flatten
from ablation.tracking.inputs import records as dataset_records
from ablation.tracking.journal import unsent_root
from ablation.tracking.model import load_model, log_model, register_model, run_model_uri
from ablation.tracking.process import HOST_ENV, LAUNCH_ENV, NODE_ENV, host_name
from ablation.tracking.replay import replay_unsent
from ablation.tracking.runs import (
    close_dead_children,
    close_parent,
    count_children,
    describe_sweep,
    download,
    experiment_of,
    find_run,
    finished_run,
    histories,
    load_runs,
    log_to_run,
    open_parent,
    previous_runs,
    publish,
    sweep_definition,
    sweep_hash,
    sweep_keys,
)
from ablation.tracking.store import EXPERIMENT_TAGS, experiment_id, sqlite_path, store
from ablation.tracking.tracker import PARENT_RUN_ENV, Tracker, run, scratch_dir

__all__ = ["EXECUTION_KEYS", "EXPERIMENT_TAGS", "HOST_ENV", "LAUNCH_ENV", "NODE_ENV", "NOT_IDENTITY", "PARENT_RUN_ENV", "StoreUnavailable", "Tracker", "client",
           "close_dead_children", "close_parent", "config_hash", "count_children", "dataset_records",
           "describe_sweep", "download", "experiment_id", "experiment_of", "find_run", "finished_run", "flatten",
           "histories", "host_name", "load_model", "load_runs", "log_model", "log_to_run", "open_parent",
           "orphan", "previous_runs", "publish", "register_model",
           "replay_unsent", "run", "run_model_uri", "scratch_dir", "sqlite_path", "store", "sweep_definition", "sweep_hash",
           "sweep_keys",
           "unsent_root"]

"""Every MLflow API the package uses that MLflow does not document as public, in one place: an MLflow upgrade
may move or change any of them without notice, so this is the module to check after one (pyproject.toml pins
mlflow<4). Checked against MLflow 3.17.2. Each import waits until its function is called: importing MLflow costs
seconds."""
from __future__ import annotations


def resolve_tags(tags: dict[str, str]) -> dict[str, str]:
    """tags plus MLflow's context tags (mlflow.user, mlflow.source.name/type, mlflow.source.git.*), as its fluent
    runs get them: the context provider registry of mlflow.tracking.context.registry."""
    from mlflow.tracking.context.registry import resolve_tags as resolve

    return resolve(tags)


def git_commit(folder: str) -> str | None:
    from mlflow.utils.git_utils import get_git_commit

    return get_git_commit(folder)


def git_branch(folder: str) -> str | None:
    from mlflow.utils.git_utils import get_git_branch

    return get_git_branch(folder)


def git_repo_url(folder: str) -> str | None:
    from mlflow.utils.git_utils import get_git_repo_url

    return get_git_repo_url(folder)


def code_source(name: str):
    """The dataset source of data that code generates (MLflow's CodeDatasetSource), named `name`."""
    from mlflow.data.code_dataset_source import CodeDatasetSource

    return CodeDatasetSource({"mlflow.source.name": name})


def dataset_entity(dataset):
    """An mlflow.data dataset (from_numpy's) as the mlflow.entities.Dataset that a DatasetInput holds."""
    return dataset._to_mlflow_entity()


def host_creds(uri: str):
    """The credentials MLflow's REST client sends to the server at uri: MLFLOW_TRACKING_USERNAME/PASSWORD or
    MLFLOW_TRACKING_TOKEN, else ~/.mlflow/credentials (.username, .password, .token)."""
    from mlflow.utils.credentials import get_default_host_creds

    return get_default_host_creds(uri)


def http_request(creds, endpoint: str, method: str, **kwargs):
    """One request through MLflow's REST client, with its headers and retries (max_retries, backoff_factor,
    backoff_jitter, timeout, raise_on_status, json): a requests.Response."""
    from mlflow.utils.rest_utils import http_request as request

    return request(creds, endpoint, method, **kwargs)

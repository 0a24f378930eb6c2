"""What MLflow records about where a run comes from, as its fluent runs do (MLflow's context registry: the user,
the source's name and type, the git commit and repository when run from a git checkout), and the versions of the
libraries that shaped the result."""
from __future__ import annotations

import importlib.metadata
import os

from ablation.tracking import compat

# Distributions whose versions a run records as tags `version.<name>` (those installed).
# tag version.<name> -> the distribution whose version it records
VERSIONED = {"ablation": "augment-ablation", "keras": "keras", "tensorflow": "tensorflow", "jax": "jax",
             "albumentations": "albumentations", "mlflow": "mlflow", "hydra-core": "hydra-core", "numpy": "numpy"}


def versions() -> dict[str, str]:
    out = {}
    for name, distribution in VERSIONED.items():
        try:
            out[f"version.{name}"] = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def context_tags(tags: dict[str, str]) -> dict[str, str]:
    """tags plus MLflow's context tags (mlflow.user, mlflow.source.name/type, mlflow.source.git.commit, ...) and
    the library versions; the given tags win where they overlap."""
    out = compat.resolve_tags({**versions(), **tags})
    if "mlflow.source.git.commit" not in out:
        out.update(_git(os.getcwd()))
    return out


def _git(folder: str) -> dict[str, str]:
    """The git checkout a command runs in (its configs and own policies live there). MLflow looks only at the
    main file's, which for a console script or pytest lies in a virtualenv that git ignores."""
    found = {"mlflow.source.git.commit": compat.git_commit(folder),
             "mlflow.source.git.branch": compat.git_branch(folder),
             "mlflow.source.git.repoURL": compat.git_repo_url(folder)}
    return {k: v for k, v in found.items() if v}

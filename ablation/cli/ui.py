"""ablation-ui [port=5000] [host=127.0.0.1] [overrides] (or python -m ablation.cli.ui; config: conf/ui.yaml): the
MLflow UI over the project's store, bound to 127.0.0.1 unless host= says otherwise."""
from __future__ import annotations

import os
import subprocess
import sys

import hydra
from omegaconf import DictConfig

from ablation import tracking
from ablation.cli.compose import renamed_refused
from ablation.core import guard, paths


def serve(cfg: DictConfig) -> int:
    """Print the runs-table address of each experiment, then run `mlflow ui` until Ctrl-C."""
    port, host = cfg.get("port", 5000), str(cfg.get("host", "127.0.0.1"))
    uri, artifacts = tracking.store(cfg.tracking)
    if not uri.startswith("sqlite:///"):
        guard.fail(f"tracking.uri: {uri} is a server already; open it in a browser")
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: host={host}: the UI has no login; anyone who can reach this machine's port "
              f"{port} can read, change and delete every run", file=sys.stderr)
    base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    print(f"MLflow UI on {base} over {uri}")
    mlflow_client = tracking.client(cfg.tracking)
    for exp in mlflow_client.search_experiments():
        # MLflow 3 opens experiments in its GenAI view; this address lands on the runs table.
        print(f"  {exp.name}: {base}/#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning")
    print("Group the runs table by the tag `augmentation` to aggregate seeds per policy. Ctrl-C stops the server.")
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
    if artifacts:
        command += ["--default-artifact-root", artifacts]
    try:
        return subprocess.call(command, env=os.environ)
    except KeyboardInterrupt:
        return 0


@renamed_refused
@hydra.main(config_path="../conf", config_name="ui", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """`ablation-ui [port=5000] [host=127.0.0.1]`"""
    paths.configure(cfg.get("paths"))
    with guard.guard():
        code = serve(cfg)
    sys.exit(code)


def call(argv: list[str]) -> int:
    """The command for callers in Python: argv as on the command line; the exit code."""
    from ablation.cli.compose import compose_app

    try:
        with guard.guard():
            return serve(compose_app("ui", argv))
    except SystemExit as exc:
        return exc.code


if __name__ == "__main__":
    main()

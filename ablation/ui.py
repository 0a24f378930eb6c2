"""python -m ablation.ui [--port 5000] [--host 127.0.0.1] [overrides]: the MLflow UI over the project's store,
bound to 127.0.0.1 unless --host says otherwise."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

from ablation import tracking
from ablation.cli import compose_from_argv


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m ablation.ui")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind; anything but 127.0.0.1 lets other machines read and change every run")
    args, overrides = parser.parse_known_args(argv)
    cfg = compose_from_argv(overrides)
    uri, artifacts = tracking.store(cfg.tracking)
    if not uri.startswith("sqlite:///"):
        print(f"error: tracking.uri: {uri} is a server already; open it in a browser", file=sys.stderr)
        return 2
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: --host {args.host}: the UI has no login; anyone who can reach this machine's port "
              f"{args.port} can read, change and delete every run", file=sys.stderr)
    base = f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else args.host}:{args.port}"
    print(f"MLflow UI on {base} over {uri}")
    mlflow_client = tracking.client(cfg.tracking)
    for exp in mlflow_client.search_experiments():
        # MLflow 3 opens experiments in its GenAI view; this address lands on the runs table.
        print(f"  {exp.name}: {base}/#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning")
    print("Group the runs table by the tag `augmentation` to aggregate seeds per policy. Ctrl-C stops the server.")
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", args.host,
               "--port", str(args.port)]
    if artifacts:
        command += ["--default-artifact-root", artifacts]
    try:
        return subprocess.call(command, env=os.environ)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

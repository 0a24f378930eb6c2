"""The journal of a run whose tracking server stopped answering: runs/unsent/<run_id>/ holds store.json (where it
belongs), journal.jsonl (every write, in order) and files/ (the artifacts). ablation.tracking.replay sends it."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from ablation import paths


def unsent_root() -> Path:
    return paths.folder("unsent")


class Journal:
    """Opened when the store stops answering; the tracker writes into it from then on."""

    def __init__(self, uri: str | None, run_id: str, exc: BaseException):
        self.folder = unsent_root() / run_id
        (self.folder / "files").mkdir(parents=True, exist_ok=True)
        (self.folder / "store.json").write_text(json.dumps({"uri": uri, "run_id": run_id,
                                                            "error": f"{type(exc).__name__}: {exc}"[:2000]}))
        print(f"warning: the tracking server at {uri} stopped answering; run {run_id} goes on and keeps "
              f"what it logs in {self.folder}", file=sys.stderr, flush=True)

    def write(self, entry: dict) -> None:
        with open(self.folder / "journal.jsonl", "a") as f:
            f.write(json.dumps(entry) + "\n")

    def keep_file(self, path: Path, folder: str | None) -> None:
        """An artifact that cannot be sent now: copied into the journal."""
        files = self.folder / "files"
        target = files / f"{len(list(files.iterdir()))}" / Path(path).name
        target.parent.mkdir(parents=True)
        shutil.copyfile(path, target)
        self.write({"kind": "file", "path": str(target.relative_to(self.folder)), "folder": folder})

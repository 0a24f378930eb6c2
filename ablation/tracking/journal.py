"""The journal of a run whose tracking server stopped answering: runs/unsent/<run_id>/ holds store.json (where it
belongs), journal.jsonl (every write, in order) and files/ (the artifacts). ablation.tracking.replay sends it."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from ablation.core import paths

log = logging.getLogger(__name__)


def unsent_root() -> Path:
    return paths.folder("unsent")


class Journal:
    """Opened when the store stops answering; the tracker writes into it from then on."""

    def __init__(self, uri: str | None, run_id: str, exc: BaseException):
        self.folder = unsent_root() / run_id
        (self.folder / "files").mkdir(parents=True, exist_ok=True)
        (self.folder / "store.json").write_text(json.dumps({"uri": uri, "run_id": run_id,
                                                            "error": f"{type(exc).__name__}: {exc}"[:2000]}))
        log.warning("warning: the tracking server at %s stopped answering; run %s goes on and keeps what it logs "
                    "in %s", uri, run_id, self.folder)

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

"""A RUNNING run's proof of life: the tag `heartbeat` (UTC epoch seconds), refreshed by a daemon thread at least
every `tracking.heartbeat_s` seconds (and at each epoch's end) while the run is open, so that a process on any
machine can tell a live run from one whose process died (ablation.tracking.process judges it). The thread writes
past the run's own Tracker: a heartbeat is never journaled, and one that fails is logged at debug and tried again
at the next beat; it never waits on training, nor training on it."""
from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger(__name__)

TAG = "heartbeat"  # when the run last said it was alive: UTC epoch seconds
PERIOD_TAG = "heartbeat_s"  # how often it promised to say so
DEFAULT_PERIOD_S = 30.0
MIN_EPOCH_BEAT_S = 1.0  # epoch ends closer together than this share one beat


def period_of(tracking) -> float:
    """tracking.heartbeat_s (absent from an older tracking config: DEFAULT_PERIOD_S)."""
    value = tracking.get("heartbeat_s") if tracking is not None else None
    return float(value) if value else DEFAULT_PERIOD_S


def now() -> str:
    return f"{time.time():.1f}"


def tags(period_s: float) -> dict[str, str]:
    """The tags a run is created with: its first heartbeat, and the period its later ones keep."""
    return {TAG: now(), PERIOD_TAG: f"{period_s:g}"}


class Heartbeat:
    """Refreshes one run's `heartbeat` tag from a daemon thread until stop(). beat() asks for a beat now (an
    epoch ended) without waiting for it."""

    def __init__(self, mlflow_client, run_id: str, period_s: float):
        self.client = mlflow_client
        self.run_id = run_id
        self.period_s = period_s
        self.last = time.monotonic()  # the run was created with a heartbeat
        self._wake = threading.Event()
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{run_id[:8]}", daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def beat(self) -> None:
        if time.monotonic() - self.last >= min(MIN_EPOCH_BEAT_S, self.period_s):
            self._wake.set()

    def stop(self, timeout_s: float = 5.0) -> None:
        """No beat after this returns (unless a write in flight outlasts timeout_s: the run's end does not wait
        longer for a slow store)."""
        self._stopped = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _loop(self) -> None:
        while True:
            self._wake.wait(max(self.period_s - (time.monotonic() - self.last), 0))
            self._wake.clear()
            if self._stopped:
                return
            self._write()

    def _write(self) -> None:
        self.last = time.monotonic()  # a failed write is tried again a period later, not in a tight loop
        try:
            self.client.set_tag(self.run_id, TAG, now())
        except Exception as exc:
            log.debug("heartbeat of run %s not recorded (tried again in %g s): %s: %s", self.run_id,
                      self.period_s, type(exc).__name__, exc)

"""How every command ends, in one place. SIGTERM (`kill`, a scheduler) becomes KeyboardInterrupt, so it unwinds
like Ctrl-C: every open run is closed KILLED on the way out, never left RUNNING. A UserError (a bad config, bad
data, a known failure with a known fix) ends the command with one `error: <message>` line and exit code 2; an
interrupt with exit code 130. Anything else is a bug and keeps its traceback."""
from __future__ import annotations

import functools
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ablation.core.errors import UserError

USER_ERROR_EXIT = 2
INTERRUPTED_EXIT = 130


class BelowWarning(logging.Filter):
    """Lets through what is below WARNING: status lines go to stdout, warnings and errors to stderr (the logging
    config of the `ablation` command, ablation/conf/hydra/job_logging/ablation.yaml)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.WARNING


def _as_interrupt(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


def sigterm_interrupts() -> None:
    """From now on SIGTERM raises KeyboardInterrupt in the main thread (signals can only be set there)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _as_interrupt)


def fail(message: str) -> None:
    """End the command with one error line (the message names the key or file at fault)."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(USER_ERROR_EXIT)


@contextmanager
def guard(interrupted: str = "interrupted") -> Iterator[None]:
    sigterm_interrupts()
    try:
        yield
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr, flush=True)
        sys.exit(INTERRUPTED_EXIT)
    except UserError as exc:
        fail(str(exc))


def command(function: Callable) -> Callable:
    """A command's main function, guarded (put it under @hydra.main, so Hydra's own errors stay Hydra's)."""
    @functools.wraps(function)
    def guarded(*args, **kwargs):
        with guard():
            return function(*args, **kwargs)
    return guarded

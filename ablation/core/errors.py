"""Mistakes a person fixes from one line: the base class and its kinds. Every message is one line that starts with
the config key or the file at fault. Entry points print `error: <message>` for these (exit code 2) and keep the
traceback for anything else, which is a bug. Importing this module imports nothing else of the package."""
from __future__ import annotations


class UserError(Exception):
    """A mistake in the config, the data or the environment, or a known failure with a known fix."""


class ConfigError(UserError, ValueError):
    """A bad setting; the message starts with the config key."""


class PolicyError(UserError, ValueError):
    """A bad augmentation setting; the message starts with the config key."""


class DataError(UserError, ValueError):
    """Unusable dataset config or data; the message starts with the config key (usually dataset.path)."""


class StoreUnavailable(UserError, RuntimeError):
    """The tracking server stopped answering during a run; what the run logged is kept in a local journal."""


class TrainingDiverged(UserError, FloatingPointError):
    """The training loss became NaN or infinite; the message says which setting to change."""


class GeneratorFailed(UserError, RuntimeError):
    """A generator of synthetic training images diverged (non-finite losses) or collapsed (one image per class);
    the message says which and what to change."""


def user_error(exc: BaseException) -> bool:
    """True for mistakes the user fixes from the one-line message."""
    return isinstance(exc, UserError)

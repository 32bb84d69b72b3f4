"""The errors a user sees. Each message names the field, file or directory to fix.

`vae.cli` prints any of `USER_ERRORS` as one line (exit code 2, no traceback), and a
`Stopped` run as its message (exit code 128 + the signal), after the checkpoint was saved.
"""

from __future__ import annotations

import signal


class ConfigError(ValueError):
    """A config value that cannot work; the message names the field."""


class DataError(ValueError):
    """Bad or missing data; the message names the file or flag to fix."""


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, mismatched workdir); the message says why."""


class PriorError(TrainingError):
    """A prior that cannot be fitted or loaded here; the message says why."""


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit the model; the message names it."""


class Stopped(Exception):
    """SIGTERM/SIGINT arrived; what was reached is saved in `where` and a rerun resumes there."""

    def __init__(self, signum: int, step: int | None, where: str | None):
        self.signum = signum
        at = f"at step {step}" if step is not None else "after its last checkpoint"
        saved = f"saved a checkpoint in {where}. Rerun the same command to resume from it." if where else \
            "nothing of this fit is saved; rerun the same command to start it again."
        super().__init__(f"stopped by {signal.Signals(signum).name} {at}; {saved}")


# Mistakes a user can fix from the message alone.
USER_ERRORS = (
    ConfigError,
    DataError,
    TrainingError,
    CheckpointError,
    OSError,  # unreadable or missing files, a full disk, no permission: the message names the path
)

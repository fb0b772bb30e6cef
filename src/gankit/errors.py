"""The one exception type for mistakes a user can fix (bad flags, files, folders).

The CLI prints these as a single line and exits non-zero; everything else is a bug and keeps
its traceback.
"""


class GankitError(Exception):
    """A user error: the message names the file, option or value and says what was expected."""


class TrainingInterrupted(Exception):
    """Training stopped on SIGINT/SIGTERM after saving a checkpoint."""

    def __init__(self, step: int, run_dir: str, signum: int):
        super().__init__(
            f"interrupted at step {step}; checkpoint saved, continue with: gankit train --resume {run_dir}"
        )
        self.step, self.signum = step, signum

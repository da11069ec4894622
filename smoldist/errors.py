"""Errors a user can act on: the CLI prints them as one line and exits with the error's status, without a traceback.

Exit statuses of `smoldist` (and of each rank under a launcher; docs/reliability.md):
    0  done                                     3  stopped by a signal with a checkpoint; run again to resume
    2  bad input (recipe, data, store)          4  the loss or gradient norm went non-finite (NonFiniteError)
  130  a second Ctrl-C: stopped at once          5  the checkpoint's filesystem is full (DiskFullError)
"""


class SmoldistError(Exception):
    """Base for errors caused by the user's input, not by a bug."""

    exit_code = 2


class RecipeError(SmoldistError):
    """The recipe or an override is wrong: names the key and what is valid."""


class DataError(SmoldistError):
    """A source or record is unusable: names the file, line or index and the reason."""


class StoreError(SmoldistError):
    """A prepared store is missing, corrupt, or does not match the recipe."""


class NonFiniteError(SmoldistError):
    """Training produced a non-finite loss or gradient norm: stopped before the step was applied or saved."""

    exit_code = 4


class DiskFullError(SmoldistError):
    """A checkpoint does not fit (or did not fit) on its filesystem: names the path, bytes needed and free."""

    exit_code = 5

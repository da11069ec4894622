"""Errors a user can act on: the CLI prints them as one line and exits 2, without a traceback."""


class SmoldistError(Exception):
    """Base for errors caused by the user's input, not by a bug."""


class RecipeError(SmoldistError):
    """The recipe or an override is wrong: names the key and what is valid."""


class DataError(SmoldistError):
    """A source or record is unusable: names the file, line or index and the reason."""


class StoreError(SmoldistError):
    """A prepared store is missing, corrupt, or does not match the recipe."""

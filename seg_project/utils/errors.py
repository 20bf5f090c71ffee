"""The project's expected errors: bad input named by the file (or config key) at fault.

Every tool prints them as one ``error: <file or key>: <problem>`` line and exits with status 2
(:mod:`seg_project.utils.cli`); anything else is a bug and keeps its traceback.
"""

__all__ = ["ConfigError", "DatasetError", "UserInputError", "WeightsError"]


class UserInputError(ValueError):
    """Input that the user can fix: ``str(error)`` is ``"<where>: <problem>"``.

    Attributes:
        path: the file, folder or config key at fault (``where``).
        problem: what is wrong with it.
    """

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class DatasetError(UserInputError):
    """Bad input data. The message starts with the offending file and says what is wrong."""


class ConfigError(UserInputError):
    """A config key that does not exist or a value it cannot take (``path`` is the key)."""


class WeightsError(UserInputError):
    """A weights or checkpoint file that is missing, unreadable, or does not fit the model."""

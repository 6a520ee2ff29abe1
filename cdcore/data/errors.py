"""The error every bad data input raises: the message names the file or field and the fix."""


class DataError(ValueError):
    """A data file is missing, corrupt or breaks the schema; the message names the file and the fix."""


class MissingInput(DataError, FileNotFoundError):
    """An input file is not there (yet): the stage that writes it has not run."""

    def __init__(self, path: object, remedy: str = "run the stage that writes it first") -> None:
        super().__init__(f"{path}: file not found; {remedy}")
        self.filename = str(path)

    def __str__(self) -> str:  # OSError's would print "[Errno None] None: path"
        return str(self.args[0])

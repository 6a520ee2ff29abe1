"""The error every bad data input raises: the message names the file or field and the fix."""


class DataError(ValueError):
    """A data file is missing, corrupt or breaks the schema; the message names the file and the fix."""

"""The project's own error types. Parsers and validators raise only these."""

from __future__ import annotations

from pathlib import Path


class DatasetError(Exception):
    """Base class for every error about input data."""


class FormatError(DatasetError):
    """A file does not have the expected form. Names the file, the line (1-based) and the form."""

    def __init__(self, path: str | Path, line: int | None, expected: str, got: str | None = None):
        self.path = str(path)
        self.line = line
        self.expected = expected
        self.got = got
        where = f"{self.path}:{line}" if line is not None else self.path
        msg = f"{where}: expected {expected}"
        if got is not None:
            shown = got if len(got) <= 120 else got[:117] + "..."
            msg += f", got {shown!r}"
        super().__init__(msg)


class NotThisDatasetError(DatasetError):
    """The input is not the dataset it was said to be (e.g. no label.csv in a FashionAI folder)."""


class WrongFormatError(FormatError, NotThisDatasetError):
    """A file that is mostly (or wholly) not the expected format: not this dataset at all, rather
    than a damaged copy of it."""


class ChecksumError(DatasetError):
    def __init__(self, path: str | Path, expected: str, actual: str):
        self.path, self.expected, self.actual = str(path), expected, actual
        super().__init__(f"{path}: sha256 {actual} does not match the expected {expected}")


class UnsafeArchiveError(DatasetError):
    """An archive member would escape the extraction folder or is too large."""


class ConflictError(DatasetError):
    """Two copies of one file (the user's and an archive member's, or two members of one archive)
    with different content: which one is meant cannot be told, so neither is used."""


class DownloadError(DatasetError):
    pass


class ValidationFailed(DatasetError):
    """Too large a share of the input was quarantined (validate.max_bad_fraction)."""

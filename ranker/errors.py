"""The ranker's one exception type, with machine-readable fields next to its message."""

from __future__ import annotations

from pathlib import Path


class RankerError(Exception):
    """Training rows or a model version are missing, malformed or inconsistent, or cannot train.

    ``path`` names the file or folder (``""`` for data held in memory); ``reason`` is a short tag:

    ==============  ==============================================================================
    ``missing``     a file or folder is not there (or ``LATEST`` names nothing)
    ``incomplete``  an unfinished build, or a version folder without its manifest
    ``format``      not a crossrec ranker model or rows file, or a format version not supported
    ``manifest``    the manifest is unreadable or lacks what it must record
    ``checksum``    a file's size or sha256 differs from the manifest
    ``schema``      columns or features do not match (names, count, dtypes, schema hash)
    ``values``      a column holds values outside its contract (nulls, labels other than 0/1)
    ``data``        too little data to train (a head without positives or negatives)
    ``exists``      the version to write exists already
    ==============  ==============================================================================
    """

    def __init__(self, message: str, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {message}" if str(path) else message)

"""The indexer's exceptions. Every one carries machine-readable fields next to its message."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class IndexerError(Exception):
    """Base class of everything the indexer package raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input file.

    ``row`` is the 1-based record number (row 1 is the first record: for CSV the line after the
    header, for JSON Lines line 1), or None when the problem concerns the file or a whole column.
    """

    message: str
    row: int | None = None
    column: str | None = None

    def __str__(self) -> str:
        where = []
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column is not None:
            where.append(f"column '{self.column}'")
        return f"{', '.join(where)}: {self.message}" if where else self.message


class DataValidationError(IndexerError):
    """A catalogue or event file does not meet its contract. Nothing from it was used.

    ``problems`` lists what was found (the message shows the first ``shown``); ``path`` names the
    file.
    """

    shown = 20

    def __init__(self, path: str | Path, problems: list[Problem]) -> None:
        self.path = str(path)
        self.problems = list(problems)
        lines = [f"{self.path}: {len(self.problems)} problem(s)"]
        lines += [f"  {p}" for p in self.problems[: self.shown]]
        if len(self.problems) > self.shown:
            lines.append(f"  ... and {len(self.problems) - self.shown} more")
        super().__init__("\n".join(lines))


class EncoderError(IndexerError):
    """A model could not be loaded or used. ``model`` names the model path."""

    def __init__(self, message: str, model: str | None = None) -> None:
        self.model = model
        super().__init__(message)


class ArtifactError(IndexerError):
    """An index version is missing, incomplete, corrupted or of an unknown format.

    ``path`` names the version folder or file; ``reason`` is a short machine-readable tag
    (``missing``, ``format``, ``checksum``, ``shape``, ``manifest``).
    """

    def __init__(self, message: str, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {message}")

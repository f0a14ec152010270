"""Training rows on disk: a folder of Parquet parts written as they are made, or one Parquet file.

============  ==============================================================================
form          what it is
============  ==============================================================================
folder        ``part-00000.parquet``, ``part-00001.parquet``, ... (each a whole number of
              decisions) and ``rows.json``, written last: ``{"format", "format_version",
              "features", "schema_hash", "meta", "parts": [{"file", "rows", "decisions"}]}``.
              :class:`RowWriter` fills a hidden staging folder next to the target and renames it
              into place on :meth:`RowWriter.close`: a reader sees the old rows or all the new
              ones. What ``crossrec train`` writes: the replay hands over a few thousand
              decisions at a time, so no step holds more than one part besides the matrix.
file          one Parquet file whose key-value metadata holds, under ``crossrec.rows``, the JSON
              ``{"format_version", "features", "schema_hash", "meta"}`` (:func:`write_rows`);
              written to a temporary name and renamed into place.
============  ==============================================================================

:func:`read_rows` reads either, validating every part against the contract
(:func:`ranker.rows.normalise_rows`), and fills the feature matrix part by part, so reading needs
the matrix, the key columns and one part at a time.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from ranker.errors import RankerError
from ranker.rows import (
    ROWS_FORMAT,
    ROWS_FORMAT_VERSION,
    TrainingRows,
    normalise_rows,
    schema_hash,
    split_features,
)

log = logging.getLogger(__name__)

METADATA_KEY = "crossrec.rows"
MANIFEST_FILE = "rows.json"


class RowWriter:
    """Write training rows to the folder ``path`` as parts (:meth:`write`), then :meth:`close`.
    Use as a context manager: leaving it by an exception removes the staging folder and leaves
    the previous rows (if any) as they were."""

    def __init__(self, path: str | Path, features: Sequence[str]) -> None:
        self.path = Path(path)
        self.features = tuple(features)
        self.parts: list[dict] = []
        self._decision_ids: set[int] = set()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._staging = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        shutil.rmtree(self._staging, ignore_errors=True)
        self._staging.mkdir()

    @property
    def rows(self) -> int:
        return sum(p["rows"] for p in self.parts)

    @property
    def decisions(self) -> int:
        return len(self._decision_ids)

    def write(self, frame: pl.DataFrame) -> None:
        """Validate ``frame`` (whole decisions, none written before) and write it as the next
        part. An empty frame writes nothing."""
        if frame.height == 0:
            return
        name = f"part-{len(self.parts):05d}.parquet"
        checked = normalise_rows(frame, self.features, self._staging / name)
        ids = set(checked["decision_id"].unique().to_list())
        again = ids & self._decision_ids
        if again:
            raise RankerError(
                f"decision {min(again)} is split over two parts (a part holds whole decisions)",
                self._staging / name,
                "values",
            )
        checked.write_parquet(self._staging / name)
        self._decision_ids |= ids
        self.parts.append({"file": name, "rows": checked.height, "decisions": len(ids)})

    def close(self, meta: dict) -> Path:
        """Write ``rows.json`` with ``meta`` (JSON-serialisable) and move the folder into place
        (replacing earlier rows there). Returns the folder."""
        if not self.parts:
            raise RankerError("no rows were written", self.path, "values")
        manifest = {
            "format": ROWS_FORMAT,
            "format_version": ROWS_FORMAT_VERSION,
            "features": list(self.features),
            "schema_hash": schema_hash(self.features),
            "meta": meta,
            "parts": self.parts,
        }
        (self._staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1))
        old = self.path.with_name(f".{self.path.name}.old-{os.getpid()}")
        if self.path.exists():
            os.replace(self.path, old)
        os.replace(self._staging, self.path)
        shutil.rmtree(old, ignore_errors=True)
        log.info("wrote %d rows of %d decisions to %s", self.rows, self.decisions, self.path)
        return self.path

    def abort(self) -> None:
        shutil.rmtree(self._staging, ignore_errors=True)

    def __enter__(self) -> RowWriter:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        self.abort()


def write_rows(path: str | Path, frame: pl.DataFrame, features: Sequence[str], meta: dict) -> None:
    """Validate ``frame`` and write it to ``path`` (one Parquet file) with the feature list, its
    schema hash and ``meta`` (JSON-serialisable) in the file's metadata. Atomic: a temporary file
    in the same folder is renamed into place, so a reader sees the old file or the whole new one."""
    path = Path(path)
    checked = normalise_rows(frame, features, path)
    payload = {
        "format_version": ROWS_FORMAT_VERSION,
        "features": list(features),
        "schema_hash": schema_hash(features),
        "meta": meta,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        checked.write_parquet(tmp, metadata={METADATA_KEY: json.dumps(payload)})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    log.info(
        "wrote %d rows of %d decisions to %s",
        checked.height,
        checked["decision_id"].n_unique(),
        path,
    )


def read_rows(path: str | Path, features_in_memory: bool = True) -> TrainingRows:
    """Read and validate rows written by :class:`RowWriter` (a folder) or :func:`write_rows` (a
    file). ``features_in_memory=False`` (a folder only) leaves the feature columns on disk and
    reads them a selection at a time (:meth:`ranker.rows.TrainingRows.take`): memory holds the
    key and label columns and one part.

    Raises :class:`RankerError`: ``missing`` (no such file or folder), ``format`` (not Parquet,
    no crossrec rows metadata, an unknown row format version, a part missing or holding other
    than its recorded rows), ``schema`` (the stored hash does not match the stored feature list,
    or a column is missing or unusable), ``values`` (see :func:`ranker.rows.normalise_rows`;
    also a decision in two parts)."""
    path = Path(path)
    if path.is_dir():
        return _read_folder(path, features_in_memory)
    if not path.is_file():
        raise RankerError("no such rows file or folder", path, "missing")
    try:
        metadata = pl.read_parquet_metadata(path)
    except Exception as exc:  # polars raises several types for a file that is not Parquet
        raise RankerError(f"not a Parquet file: {exc}", path, "format") from exc
    if METADATA_KEY not in metadata:
        raise RankerError(
            f"not crossrec training rows (no {METADATA_KEY!r} metadata)", path, "format"
        )
    features, stored_hash, meta = _stored(metadata[METADATA_KEY], path, METADATA_KEY)
    keys, x = split_features(normalise_rows(pl.read_parquet(path), features, path), features)
    return TrainingRows(keys, x, tuple(features), stored_hash, meta)


def _read_folder(path: Path, features_in_memory: bool) -> TrainingRows:
    manifest_path = path / MANIFEST_FILE
    if not manifest_path.is_file():
        raise RankerError(
            f"no {MANIFEST_FILE} (not crossrec training rows, or written incompletely)",
            path,
            "format",
        )
    text = manifest_path.read_text()
    features, stored_hash, meta = _stored(text, manifest_path, MANIFEST_FILE)
    try:
        parts = [(str(p["file"]), int(p["rows"])) for p in json.loads(text)["parts"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise RankerError(f"unreadable parts in {MANIFEST_FILE}: {exc!r}", path, "format") from exc
    total = sum(n for _, n in parts)
    x = np.empty((total, len(features) if features_in_memory else 0), dtype=np.float32)
    keys, offset, seen, on_disk = [], 0, 0, []
    for name, count in parts:
        part = path / Path(name).name  # a part is a file of this folder, whatever the entry says
        if not part.is_file():
            raise RankerError(f"part {name} is missing", path, "format")
        frame = normalise_rows(pl.read_parquet(part), features, part)
        if frame.height != count:
            raise RankerError(
                f"part {name} holds {frame.height} rows, {MANIFEST_FILE} says {count}",
                path,
                "format",
            )
        if features_in_memory:
            part_keys, _ = split_features(frame, features, out=x[offset : offset + count])
        else:
            part_keys = frame.drop(features)
            on_disk.append((part, offset, count))
        keys.append(part_keys)
        seen += part_keys["decision_id"].n_unique()
        offset += count
    frame_keys = pl.concat(keys, rechunk=False)
    if frame_keys["decision_id"].n_unique() != seen:
        raise RankerError("a decision's rows are split over two parts", path, "values")
    if features_in_memory:
        return TrainingRows(frame_keys, x, tuple(features), stored_hash, meta)
    return TrainingRows(frame_keys, None, tuple(features), stored_hash, meta, PartFeatures(on_disk))


class PartFeatures:
    """The feature columns of a folder's parts, read when asked for: ``parts`` are (file, first
    row, rows) in row order."""

    def __init__(self, parts: list[tuple[Path, int, int]]) -> None:
        self.parts = parts

    def take(self, rows: np.ndarray, features: Sequence[str]) -> np.ndarray:
        """(len(rows), len(features)) float32 of ``rows`` (sorted indices), one part at a
        time."""
        out = np.empty((len(rows), len(features)), dtype=np.float32)
        for file, start, count in self.parts:
            lo, hi = np.searchsorted(rows, [start, start + count])
            if lo == hi:
                continue
            frame = pl.read_parquet(file, columns=list(features))
            local = rows[lo:hi] - start
            for j, name in enumerate(features):
                out[lo:hi, j] = frame[name].to_numpy()[local]
        return out


def _stored(text: str, source: Path, what: str) -> tuple[list[str], str, dict]:
    """(features, schema hash, meta) of a stored rows header, checked (version, hash)."""
    try:
        stored = json.loads(text)
        version, features = stored["format_version"], stored["features"]
        stored_hash, meta = stored["schema_hash"], stored.get("meta", {})
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise RankerError(f"unreadable {what!r} metadata: {exc!r}", source, "format") from exc
    if version != ROWS_FORMAT_VERSION:
        raise RankerError(
            f"row format version {version!r} is not supported (this crossrec reads "
            f"{ROWS_FORMAT_VERSION})",
            source,
            "format",
        )
    if schema_hash(features) != stored_hash:
        raise RankerError(
            f"stored schema hash {stored_hash} does not match the stored feature list "
            f"(which hashes to {schema_hash(features)})",
            source,
            "schema",
        )
    return features, stored_hash, meta

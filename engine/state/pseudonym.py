"""Keyed pseudonyms for user ids: HMAC-SHA256 with the engine's secret key.

The same user id always maps to the same pseudonym under one key, so profiles and deletion work,
while the raw id never reaches disk and cannot be recovered from the store without the key. The
key is therefore as precious as the store: without it no stored user can be found again (their
history can neither be read nor deleted). So:

- a key shorter than :data:`MIN_KEY_BYTES` is refused at start (an empty key file, which a crash
  between creating and writing it or an empty mounted secret leaves, would make every pseudonym
  ``HMAC(b"", id)``, reversible by trying ids);
- a key is created only for a store that holds no events yet, written atomically (temporary file,
  fsync, link into place, mode 0600); a missing key next to a store with events is refused with a
  message saying how to proceed, never silently replaced.

Rotation: there is none in place. A new key makes every stored history unreachable; rotate by
deleting (or exporting and re-ingesting under the new key) what the old key protects.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
from pathlib import Path

#: The shortest key accepted (bytes of the inline value or of the key file's stripped text).
MIN_KEY_BYTES = 32


class PseudonymKeyError(ValueError):
    """The pseudonym key is missing, too short or cannot be created; never echoes the key."""


def pseudonymise(user_id: str, key: bytes) -> str:
    return hmac.new(key, user_id.encode(), hashlib.sha256).hexdigest()


class Pseudonyms:
    """User id -> pseudonym under one key; the empty id (an anonymous request) stays empty."""

    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise PseudonymKeyError(
                f"the pseudonym key has {len(key)} bytes; at least {MIN_KEY_BYTES} are required"
            )
        self._key = key

    def of(self, user_id: str) -> str:
        return pseudonymise(user_id, self._key) if user_id else ""


def load_key(inline: str, path: Path, store_has_events: bool) -> bytes:
    """The key: ``inline`` when given, else the stripped text of the file at ``path``, created
    (64 hex characters from ``os.urandom``) only when ``store_has_events`` is false. Raises
    :class:`PseudonymKeyError` for a short key or a missing file next to a store with events."""
    if inline:
        key = inline.encode()
        where = "pseudonym_key"
    else:
        if not path.exists():
            if store_has_events:
                raise PseudonymKeyError(
                    f"the pseudonym key file {path} is missing but the event store already holds "
                    "events keyed by it: restore the file (or set pseudonym_key_file to where it "
                    "is); to start afresh instead, move the store aside - a new key would orphan "
                    "every stored user's history"
                )
            _create(path)
        key = path.read_text().strip().encode()
        where = f"the pseudonym key file {path}"
    if len(key) < MIN_KEY_BYTES:
        raise PseudonymKeyError(
            f"{where} holds {len(key)} bytes; at least {MIN_KEY_BYTES} are required (an empty "
            "file is what an interrupted creation or an empty mounted secret leaves)"
        )
    return key


def _create(path: Path) -> None:
    """Write a new random key to ``path`` atomically: a reader sees no file or the whole key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(os.urandom(32).hex())
            fh.flush()
            os.fsync(fh.fileno())
        # Fails if another process created the key meanwhile: keep theirs.
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def hash_fraction(text: str) -> float:
    """A stable pseudo-random number in [0, 1) for ``text``: its sha256 read as a fraction. Arms
    (with a salt) and impression sampling (by recommendation id) draw from it."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2.0**64

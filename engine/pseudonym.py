"""Keyed pseudonyms for user ids: HMAC-SHA256 with the engine's secret key.

The same user id always maps to the same pseudonym under one key, so profiles and deletion work,
while the raw id never reaches disk and cannot be recovered from the store without the key.
"""

from __future__ import annotations

import hashlib
import hmac


def pseudonymise(user_id: str, key: bytes) -> str:
    return hmac.new(key, user_id.encode(), hashlib.sha256).hexdigest()


def hash_fraction(text: str) -> float:
    """A stable pseudo-random number in [0, 1) for ``text``: its sha256 read as a fraction. Arms
    (with a salt) and impression sampling (by recommendation id) draw from it."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2.0**64

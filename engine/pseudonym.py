"""Keyed pseudonyms for user ids: HMAC-SHA256 with the engine's secret key.

The same user id always maps to the same pseudonym under one key, so profiles and deletion work,
while the raw id never reaches disk and cannot be recovered from the store without the key.
"""

from __future__ import annotations

import hashlib
import hmac


def pseudonymise(user_id: str, key: bytes) -> str:
    return hmac.new(key, user_id.encode(), hashlib.sha256).hexdigest()

"""The one version hash: short SHA-256 names of settings, key lists and data versions."""
from __future__ import annotations

import hashlib
import json


def digest(value, length: int = 10) -> str:
    """The first ``length`` hex digits of the SHA-256 of ``value``: a string as
    its UTF-8 bytes, anything else as its JSON with sorted keys (so equal
    settings give equal names whatever their order)."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:length]

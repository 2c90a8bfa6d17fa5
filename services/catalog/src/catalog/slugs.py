"""URL slugs: ASCII where a letter has an ASCII form ("Café" → "cafe"), other letters kept."""

from __future__ import annotations

import re
import unicodedata

_SEPARATORS = re.compile(r"[^\w]+|_+")
MAX_SLUG_LENGTH = 200


def slugify(value: str) -> str:
    """Lower-case words joined by single hyphens; "" when the value has no letter or digit."""
    decomposed = unicodedata.normalize("NFKD", value)
    without_marks = "".join(c for c in decomposed if not unicodedata.combining(c))
    text = unicodedata.normalize("NFKC", without_marks).casefold()
    return "-".join(w for w in _SEPARATORS.split(text) if w)[:MAX_SLUG_LENGTH].strip("-")


def check_slug(value: str) -> str:
    """Validator for a slug given by a client: it must already be in slug form."""
    if not value or slugify(value) != value:
        raise ValueError("a slug is lower-case letters or digits in words joined by single hyphens")
    return value

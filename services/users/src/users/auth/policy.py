"""Password policy after NIST SP 800-63B (5.1.1.2): length, not composition.

- at least `min_length` characters (default 8; PASSWORD_MIN_LENGTH raises it, e.g. to 15 for
  single-factor use as in SP 800-63B-4), counted after NFKC normalisation; up to 128 allowed;
  any Unicode character, spaces included;
- refused: a password from the bundled list of 30,000 common passwords (zxcvbn's list; nothing is
  fetched at run time), a single repeated character or a plain sequence ("aaaaaaaa",
  "12345678", "hgfedcba"), and a password equal to or containing the username or the email's local
  part (context-specific words), compared casefolded.
Each refusal names its rule in the 422 problem (`errors[].type`)."""

from __future__ import annotations

import unicodedata
from functools import lru_cache
from itertools import pairwise

from fastapi.exceptions import RequestValidationError
from zxcvbn.frequency_lists import FREQUENCY_LISTS  # type: ignore[import-untyped]

MAX_PASSWORD_LENGTH = 128
_MIN_CONTEXT_LENGTH = 3  # shorter names would refuse too many passwords by accident


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    return frozenset(p.casefold() for p in FREQUENCY_LISTS["passwords"])


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


def _is_sequence(text: str) -> bool:
    steps = {ord(b) - ord(a) for a, b in pairwise(text)}
    return len(steps) == 1 and steps <= {-1, 0, 1}


def password_problem(
    password: str, *, min_length: int = 8, username: str | None, email: str | None
) -> tuple[str, str] | None:
    """(rule, message) of the first rule the password breaks, or None."""
    normalized = unicodedata.normalize("NFKC", password)
    if len(normalized) < min_length:
        return "password_too_short", f"must be at least {min_length} characters"
    if len(normalized) > MAX_PASSWORD_LENGTH:
        return "password_too_long", f"must be at most {MAX_PASSWORD_LENGTH} characters"
    folded = normalized.casefold()
    if not folded.strip() or _is_sequence(folded):
        return "password_repetitive", "must not be one repeated character or a plain sequence"
    if folded in common_passwords():
        return "password_common", "is a commonly used password; choose another"
    if username and len(username) >= _MIN_CONTEXT_LENGTH and _fold(username) in folded:
        return "password_contains_username", "must not contain the username"
    local = (email or "").rpartition("@")[0]
    if len(local) >= _MIN_CONTEXT_LENGTH and _fold(local) in folded:
        return "password_contains_email", "must not contain the email address"
    return None


class PasswordPolicy:
    def __init__(self, *, min_length: int = 8) -> None:
        self.min_length = min_length

    def check(
        self,
        password: str,
        *,
        username: str | None,
        email: str | None,
        loc: tuple[str | int, ...] = ("body", "password"),
    ) -> None:
        """RequestValidationError (422, the rule in `errors[].type`) when the password is refused."""
        problem = password_problem(
            password, min_length=self.min_length, username=username, email=email
        )
        if problem is not None:
            rule, message = problem
            raise RequestValidationError([{"loc": loc, "msg": f"password {message}", "type": rule}])

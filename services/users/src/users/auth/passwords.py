"""Argon2id password hashing (pwdlib) with a dummy hash, so an unknown user costs one verify too."""

from __future__ import annotations

import secrets

from pwdlib import PasswordHash
from pwdlib.exceptions import UnknownHashError
from pwdlib.hashers.argon2 import Argon2Hasher


class Passwords:
    def __init__(self, *, memory_kib: int, time_cost: int, parallelism: int) -> None:
        self._hash = PasswordHash(
            (Argon2Hasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism),)
        )
        # Verified against when the login names nobody: same parameters, so the same cost.
        self._dummy_hash = self._hash.hash(secrets.token_urlsafe(32))

    def hash(self, password: str) -> str:
        return self._hash.hash(password)

    def verify(self, password: str, hashed: str) -> tuple[bool, str | None]:
        """(matches, new hash when the stored one was made with other parameters)."""
        try:
            return self._hash.verify_and_update(password, hashed)
        except UnknownHashError:
            return False, None

    def verify_dummy(self, password: str) -> None:
        """Spend the time of a real verification; the result is meaningless by construction."""
        self._hash.verify(password, self._dummy_hash)

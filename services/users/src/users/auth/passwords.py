"""Argon2id password hashing (pwdlib) behind a bounded gate, with a dummy hash so an unknown user
costs one verification too.

Every hash and verification takes one of `concurrency` slots; at most `queue_size` callers wait,
each for at most `wait_seconds`, and the rest get 503 + Retry-After at once. Handlers run in a
bounded threadpool, so without the gate a burst of logins or registrations would hold every thread
and every core, and starve requests that hash nothing (GET /users/me).

Passwords are NFKC-normalised before hashing (NIST SP 800-63B): the same characters typed on
another keyboard give the same password. A hash made before normalisation still verifies."""

from __future__ import annotations

import secrets
import threading
import unicodedata
from collections.abc import Callable
from typing import ClassVar, TypeVar

from pwdlib import PasswordHash
from pwdlib.exceptions import UnknownHashError
from pwdlib.hashers.argon2 import Argon2Hasher

from shop_common.errors import ServiceUnavailable

T = TypeVar("T")


class PasswordHashingBusy(ServiceUnavailable):
    title = "Too many sign-ins in progress"
    headers: ClassVar[dict[str, str]] = {"Retry-After": "1"}


class HashGate:
    def __init__(self, *, concurrency: int, queue_size: int, wait_seconds: float) -> None:
        self._slots = threading.BoundedSemaphore(concurrency)
        self._admission = threading.BoundedSemaphore(concurrency + queue_size)
        self._wait = wait_seconds

    def run(self, work: Callable[[], T]) -> T:
        if not self._admission.acquire(blocking=False):
            raise PasswordHashingBusy("the server is busy checking passwords; retry shortly")
        try:
            if not self._slots.acquire(timeout=self._wait):
                raise PasswordHashingBusy("the server is busy checking passwords; retry shortly")
            try:
                return work()
            finally:
                self._slots.release()
        finally:
            self._admission.release()


def normalize_password(password: str) -> str:
    return unicodedata.normalize("NFKC", password)


class Passwords:
    def __init__(
        self,
        *,
        memory_kib: int,
        time_cost: int,
        parallelism: int,
        gate: HashGate | None = None,
    ) -> None:
        self._hash = PasswordHash(
            (Argon2Hasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism),)
        )
        self.gate = gate or HashGate(concurrency=64, queue_size=0, wait_seconds=1.0)
        # Verified against when the login names nobody: same parameters, so the same cost.
        self._dummy_hash = self._hash.hash(secrets.token_urlsafe(32))

    def hash(self, password: str) -> str:
        return self.gate.run(lambda: self._hash.hash(normalize_password(password)))

    def verify(self, password: str, hashed: str) -> tuple[bool, str | None]:
        """(matches, new hash when the stored one was made with other parameters or before
        normalisation)."""
        return self.gate.run(lambda: self._verify(password, hashed))

    def _verify(self, password: str, hashed: str) -> tuple[bool, str | None]:
        normalized = normalize_password(password)
        try:
            matches, new_hash = self._hash.verify_and_update(normalized, hashed)
            if matches or normalized == password:
                return matches, new_hash
            # A hash made before passwords were normalised: accept it once and rehash.
            if self._hash.verify(password, hashed):
                return True, self._hash.hash(normalized)
            return False, None
        except UnknownHashError:
            return False, None

    def verify_dummy(self, password: str) -> None:
        """Spend the time of a real verification; the result is meaningless by construction."""
        self.gate.run(lambda: self._hash.verify(normalize_password(password), self._dummy_hash))

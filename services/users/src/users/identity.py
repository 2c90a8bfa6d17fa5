"""Identity keys: the form in which usernames and emails are compared for uniqueness and login.

Both are NFKC-normalised and casefolded, so a fullwidth or differently cased copy of an existing
name is the same account; an email's domain is compared in its IDNA (ASCII) form. The stored
username and email keep the spelling the user chose; the keys live in their own unique columns.
migrations/versions/*_identity_keys.py copies these rules (a migration must not import app code)."""

from __future__ import annotations

import unicodedata

import idna


def username_key(username: str) -> str:
    return unicodedata.normalize("NFKC", username).casefold()


def _domain_key(domain: str) -> str:
    folded = unicodedata.normalize("NFKC", domain).casefold().rstrip(".")
    try:
        return idna.encode(folded, uts46=True).decode("ascii")
    except idna.IDNAError:
        return folded  # the email validator accepted it; compare it as folded text


def email_key(email: str) -> str:
    local, _, domain = email.rpartition("@")
    return f"{unicodedata.normalize('NFKC', local).casefold()}@{_domain_key(domain)}"

"""Account errors; statuses come from the categories (shop_common.errors)."""

from __future__ import annotations

from shop_common.errors import Conflict, NotFound, Unprocessable


class UserNotFound(NotFound):
    title = "User not found"


class UsernameTaken(Conflict):
    title = "Username already taken"


class EmailTaken(Conflict):
    title = "Email already registered"


class BulkConflict(Conflict):
    title = "Some users in the batch conflict"


class IncorrectPassword(Unprocessable):
    title = "Current password is incorrect"


class SelfLockout(Conflict):
    title = "Administrators cannot deactivate, demote or delete their own account"

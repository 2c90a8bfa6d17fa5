"""Authentication errors; statuses come from the categories (shop_common.errors)."""

from __future__ import annotations

from shop_common.errors import Forbidden, TooManyRequests, Unauthorized


class InvalidCredentials(Unauthorized):
    title = "Incorrect username or password"


class AccountInactive(Forbidden):
    title = "Account is inactive"


class LoginRateLimited(TooManyRequests):
    title = "Too many login attempts"


class RegistrationRateLimited(TooManyRequests):
    title = "Too many registrations"

"""Domain errors and the one place that maps every error to an RFC 9457 problem+json response."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from shop_common.logs import current_request_id

log = logging.getLogger("shop.errors")

PROBLEM_JSON = "application/problem+json"


class DomainError(Exception):
    """Base of every error a service raises on purpose. Subclass a category, never name a status."""

    title = "Request cannot be completed"
    headers: ClassVar[dict[str, str]] = {}

    def __init__(self, detail: str | None = None, **extensions: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extensions = extensions


class BadRequest(DomainError):
    title = "Bad request"


class NotFound(DomainError):
    title = "Not found"


class Conflict(DomainError):
    title = "Conflict"


class Unprocessable(DomainError):
    title = "Unprocessable request"


class Forbidden(DomainError):
    title = "Forbidden"


class Unauthorized(DomainError):
    title = "Not authenticated"
    headers: ClassVar[dict[str, str]] = {"WWW-Authenticate": "Bearer"}


class TooManyRequests(DomainError):
    title = "Too many requests"

    def __init__(self, detail: str | None = None, *, retry_after: int, **extensions: Any) -> None:
        super().__init__(detail, retry_after=retry_after, **extensions)
        self.retry_after = retry_after


class UpstreamUnavailable(DomainError):
    title = "Upstream service unavailable"


class ServiceUnavailable(DomainError):
    title = "Service unavailable"


class Problem(BaseModel):
    """RFC 9457 problem details, as every error leaves the services (documentation model)."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    request_id: str | None = None
    # Validation: [{loc, msg, type}]; bulk operations: [{index, field, msg}], per problem type.
    errors: list[dict[str, Any]] | None = None


_PROBLEM_CONTENT = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
# Added to every route's OpenAPI: client errors (4XX, including validation's 422) and unavailability
# (5XX, e.g. 503 when the database or an upstream is down) are documented as problem+json.
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {
        "model": Problem,
        "description": "Client error (problem+json)",
        "content": _PROBLEM_CONTENT,
    },
    "5XX": {
        "model": Problem,
        "description": "Service unavailable or internal error (problem+json)",
        "content": _PROBLEM_CONTENT,
    },
}


STATUS: dict[type[DomainError], int] = {
    BadRequest: 400,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    Unprocessable: 422,
    TooManyRequests: 429,
    UpstreamUnavailable: 503,
    ServiceUnavailable: 503,
}

_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def problem_slug(exc_type: type[BaseException]) -> str:
    return _CAMEL.sub("-", exc_type.__name__).lower()


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    # loc/msg/type only: `input` can echo a password back, `ctx` may not serialize.
    return [
        {
            "loc": list(e.get("loc", ())),
            "msg": str(e.get("msg", "")),
            "type": str(e.get("type", "")),
        }
        for e in exc.errors()
    ]


# (status, title, extra members of the problem body)
Description = tuple[int, str, dict[str, Any]]
# Maps errors of a library this module must not import (the gateway installs no database stack):
# shop_common.db provides the one for SQLAlchemy, and build_service_app installs it.
Describer = Callable[[Exception], Description]


def describe_internal_error(_: Exception) -> Description:
    return (
        500,
        "Internal error",
        {
            "type": "/problems/internal-error",
            "detail": "An unexpected error occurred; it has been logged.",
        },
    )


def _describe(exc: Exception) -> Description:
    match exc:
        case DomainError():
            status = next(STATUS[c] for c in type(exc).__mro__ if c in STATUS)
            extra: dict[str, Any] = {
                "type": f"/problems/{problem_slug(type(exc))}",
                "detail": exc.detail,
            }
            extra.update(exc.extensions)
            return status, exc.title, extra
        case RequestValidationError():
            return (
                422,
                "Invalid request",
                {
                    "type": "/problems/validation-error",
                    "detail": "The request does not match the schema; see `errors`.",
                    "errors": _validation_errors(exc),
                },
            )
        case StarletteHTTPException() if isinstance(exc.__cause__, UnicodeError):
            # FastAPI answers 400 when a JSON body is not valid UTF-8; it is a malformed body
            # like any other JSON error, so it gets the same 422 as a JSON syntax error.
            return (
                422,
                "Invalid request",
                {
                    "type": "/problems/validation-error",
                    "detail": "The request body is not valid UTF-8.",
                    "errors": [{"loc": ["body"], "msg": "invalid UTF-8", "type": "json_invalid"}],
                },
            )
        case StarletteHTTPException():
            phrase = HTTPStatus(exc.status_code).phrase
            detail = exc.detail if isinstance(exc.detail, str) else phrase
            return exc.status_code, phrase, {"detail": detail}
        case _:
            return describe_internal_error(exc)


def problem_response(
    status: int,
    title: str,
    *,
    instance: str,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": title,
        "instance": instance,
        "request_id": current_request_id(),
    }
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def problem_for(request: Request, exc: Exception) -> JSONResponse:
    """The problem+json answer to an exception no handler took; a 5xx is logged with its traceback
    (and, as every log line, the current request id)."""
    return _respond(request, exc, _describe(exc))


def _respond(request: Request, exc: Exception, description: Description) -> JSONResponse:
    status, title, extra = description
    if status >= 500:
        log.error("request failed: %s", type(exc).__name__, exc_info=exc)
    headers = dict(getattr(exc, "headers", None) or {})
    if isinstance(exc, TooManyRequests):
        headers["Retry-After"] = str(exc.retry_after)
    return problem_response(
        status, title, instance=request.url.path, headers=headers or None, **extra
    )


def install_problem_handlers(
    app: FastAPI, describers: Mapping[type[Exception], Describer] | None = None
) -> None:
    """`describers`: more error families and how each maps to a problem (e.g. the database's)."""
    extra = dict(describers or {})

    async def problem(request: Request, exc: Exception) -> JSONResponse:
        describe = next(
            (d for exc_type, d in extra.items() if isinstance(exc, exc_type)), _describe
        )
        return _respond(request, exc, describe(exc))

    for exc_type in (
        DomainError,
        RequestValidationError,
        StarletteHTTPException,
        *extra,
        Exception,
    ):
        app.add_exception_handler(exc_type, problem)

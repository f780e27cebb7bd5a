"""Expected API failures, each with the GraphQL `extensions.code` that names its kind.

    ApiError
    ├── BadUserInput        BAD_USER_INPUT (with `field`)
    ├── NotFound            NOT_FOUND
    ├── Conflict            CONFLICT: the customer's state refuses the move
    ├── Forbidden           FORBIDDEN
    └── Unavailable         SERVICE_UNAVAILABLE: a dependency is down or slow; retry

Anything else raised while resolving is unexpected and masked (no stack trace leaves the process).
`ERROR_TYPES` maps every failure type the workflow and activities raise (`domain.errors.ErrorType`)
to one of these, in one table.
"""

from __future__ import annotations

from starlette.responses import JSONResponse

from domain.errors import ErrorType


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The error body of the plain HTTP endpoints (webhooks, codec): `{"error": "..."}`."""
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class ApiError(Exception):
    code = "INTERNAL_SERVER_ERROR"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field

    @property
    def extensions(self) -> dict[str, str]:
        return {"code": self.code, **({"field": self.field} if self.field else {})}


class BadUserInput(ApiError):
    code = "BAD_USER_INPUT"


class NotFound(ApiError):
    code = "NOT_FOUND"


class Conflict(ApiError):
    code = "CONFLICT"


class Forbidden(ApiError):
    code = "FORBIDDEN"


class Unavailable(ApiError):
    code = "SERVICE_UNAVAILABLE"


# What a refused update or a failed side effect means for the caller. A side effect refused for good
# (Keycloak or Sumsub said no) is recorded by the workflow for ops; the caller can only retry later.
ERROR_TYPES: dict[ErrorType, type[ApiError]] = {
    ErrorType.INVALID_INPUT: BadUserInput,
    ErrorType.ILLEGAL_TRANSITION: Conflict,
    ErrorType.EMAIL_MISMATCH: Conflict,
    ErrorType.EMAIL_CONFLICT: Conflict,
    ErrorType.REGISTRATION_REFUSED: Conflict,
    ErrorType.DEPENDENCY_UNAVAILABLE: Unavailable,
    ErrorType.CUSTOMER_CONFLICT: Conflict,
    ErrorType.NO_DEPOSIT_ACCOUNT: Unavailable,
    ErrorType.KEYCLOAK_REJECTED: Unavailable,
    ErrorType.KEYCLOAK_USER_CONFLICT: Unavailable,
    ErrorType.SUMSUB_REJECTED: Unavailable,
}


def api_error_for(error_type: str | None, message: str) -> ApiError:
    """The API error for a failure of this type; an unknown type is a failed side effect (retry later)."""
    try:
        kind = Unavailable if error_type is None else ERROR_TYPES[ErrorType(error_type)]
    except ValueError:
        kind = Unavailable
    if kind is Unavailable:
        return Unavailable(f"the change could not be completed: {message}")
    return kind(message)

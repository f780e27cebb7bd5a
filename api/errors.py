"""Expected API failures, each with the GraphQL `extensions.code` that names its kind.

Anything else raised while resolving is unexpected and masked (no stack trace leaves the process).
"""

from __future__ import annotations

from starlette.responses import JSONResponse


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

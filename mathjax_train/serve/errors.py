"""The server's refusals: ApiError carries the HTTP status and OpenAI's error object."""

from __future__ import annotations


class ApiError(Exception):
    """A request the server refuses; `body()` is `{"error": {"message", "type", "param", "code"}}`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    """A 400: the client's input is wrong (`param` names the field)."""
    return ApiError(400, message, param=param, code=code)


def overloaded(message: str) -> ApiError:
    return ApiError(429, message, type="server_overloaded", code="rate_limit_exceeded")


def unavailable(message: str) -> ApiError:
    return ApiError(503, message, type="server_error", code="service_unavailable")

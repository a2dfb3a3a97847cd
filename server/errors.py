"""OpenAI-style errors: ``{"error": {"message", "type", "param", "code"}}`` with a status that
names the problem."""

from __future__ import annotations

from fastapi.exceptions import RequestValidationError


class APIError(Exception):
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


def error_body(
    message: str, type: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def describe_validation(exc: RequestValidationError) -> tuple[str, str, str | None]:
    """One readable line for a pydantic error list: (message, type, param)."""
    errors = exc.errors()
    if not errors:
        return "invalid request", "invalid_request_error", None
    e = errors[0]
    loc = [str(p) for p in e.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    kind = e.get("type", "")
    if kind == "json_invalid":
        return (
            f"the request body is not valid JSON: {e.get('ctx', {}).get('error', e.get('msg'))}",
            "invalid_request_error",
            None,
        )
    if kind == "extra_forbidden":
        return f"Unrecognized request argument supplied: {param}", "invalid_request_error", param
    if kind == "missing":
        return f"missing required field: {param}", "invalid_request_error", param
    if kind in ("model_attributes_type", "dict_type") and not loc:
        return "the request body must be a JSON object", "invalid_request_error", None
    message = e.get("msg", "invalid value")
    message = message.removeprefix("Value error, ")
    return (f"{param}: {message}" if param else message), "invalid_request_error", param

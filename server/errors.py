"""OpenAI-style errors: ``{"error": {"message", "type", "param", "code"}}`` with a status that
names the problem."""

from __future__ import annotations

from fastapi.exceptions import RequestValidationError


class APIError(Exception):
    """An error answered as ``error_body`` with ``status`` (and ``headers``, e.g. Retry-After)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers


def printable(text: str) -> str:
    """``text`` with lone UTF-16 surrogates (``"\\ud800"`` in JSON, which is no character and cannot
    be encoded as UTF-8) written as escapes, so that an error message quoting a client's input can
    always be sent.

    >>> printable("gpt-\\ud800")
    'gpt-\\\\ud800'
    """
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def error_body(
    message: str, type: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> dict:
    """OpenAI's error object. Message and param may quote the client's input: see ``printable``."""
    return {
        "error": {
            "message": printable(message),
            "type": type,
            "param": None if param is None else printable(param),
            "code": code,
        }
    }


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
    if kind == "finite_number":
        return f"{param}: must be a finite number, not NaN or Infinity", "invalid_request_error", param
    if kind in ("bool_type", "int_type", "float_type", "string_type") and "input" in e:
        wanted = {"bool_type": "true or false", "int_type": "an integer", "float_type": "a number"}
        got = type(e["input"]).__name__.replace("NoneType", "null").replace("str", "a string")
        return (
            f"{param}: must be {wanted.get(kind, 'a string')}, got {got} {_short(e['input'])}",
            "invalid_request_error",
            param,
        )
    message = e.get("msg", "invalid value")
    message = message.removeprefix("Value error, ")
    return (f"{param}: {message}" if param else message), "invalid_request_error", param


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."

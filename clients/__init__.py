"""Clients for an IntroLLM server (installed as ``introllm.clients``; depends on nothing else of
ours): ``Client`` / ``AsyncClient`` (httpx) with temperature traces, terminal and HTML rendering,
and the streaming load driver (``loadtest``)."""

from .client import (
    AsyncClient,
    AuthenticationError,
    BadRequestError,
    Choice,
    Client,
    Completion,
    ConnectionFailed,
    IntroLLMError,
    NotFoundError,
    Piece,
    RateLimitError,
    ServerError,
)

__all__ = [
    "AsyncClient",
    "AuthenticationError",
    "BadRequestError",
    "Choice",
    "Client",
    "Completion",
    "ConnectionFailed",
    "IntroLLMError",
    "NotFoundError",
    "Piece",
    "RateLimitError",
    "ServerError",
]

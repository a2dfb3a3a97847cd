"""Clients for an IntroLLM server: ``Client`` / ``AsyncClient`` (httpx), with temperature traces."""

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

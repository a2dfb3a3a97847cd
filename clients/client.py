"""A small Python client for an IntroLLM server (sync and async, httpx), with temperature traces.

    from introllm.clients import Client
    client = Client("http://127.0.0.1:8000")
    result = client.complete("What is 7 * 8?", chat=True, max_tokens=64)
    print(result.text, result.choices[0].temperatures)
    for piece in client.stream("Tell me a story.", chat=True):
        print(piece.text, piece.temperatures, piece.updated)

Any OpenAI client works against the server too; this one exposes the ``temperature_trace``
extension directly and turns error bodies into typed exceptions. It depends on nothing else of
this project.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"


class IntroLLMError(Exception):
    """An error the server reported (or no server to report it)."""

    def __init__(
        self,
        message: str,
        status: int | None = None,
        type: str | None = None,
        code: str | None = None,
        param: str | None = None,
    ):
        super().__init__(message)
        self.message, self.status, self.type, self.code, self.param = message, status, type, code, param


class BadRequestError(IntroLLMError):
    """400: the request is invalid; the message names the problem."""


class AuthenticationError(IntroLLMError):
    """401: missing or wrong API key."""


class NotFoundError(IntroLLMError):
    """404: unknown model or route."""


class RateLimitError(IntroLLMError):
    """429: the server's queue is full; retry later."""


class ServerError(IntroLLMError):
    """5xx, or an error reported inside a stream."""


class ConnectionFailed(IntroLLMError):
    """No server answered at the URL."""


_BY_STATUS = {
    400: BadRequestError,
    401: AuthenticationError,
    404: NotFoundError,
    422: BadRequestError,
    429: RateLimitError,
}


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        err = response.json().get("error", {})
    except (json.JSONDecodeError, AttributeError):
        err = {}
    message = err.get("message") or f"HTTP {response.status_code}: {response.text[:200]}"
    cls = _BY_STATUS.get(response.status_code, ServerError if response.status_code >= 500 else IntroLLMError)
    raise cls(message, response.status_code, err.get("type"), err.get("code"), err.get("param"))


@dataclass
class Choice:
    """One completion with its trace: one entry per generated token."""

    index: int
    text: str
    finish_reason: str | None
    token_ids: list[int]
    tokens: list[str]
    temperatures: list[float]
    updated: list[bool]

    @property
    def mean_temperature(self) -> float:
        return sum(self.temperatures) / len(self.temperatures) if self.temperatures else 0.0


@dataclass
class Completion:
    choices: list[Choice]
    usage: dict[str, int]
    model: str
    raw: dict[str, Any] = field(repr=False)

    @property
    def text(self) -> str:
        return self.choices[0].text


@dataclass
class Piece:
    """What one stream chunk adds to one choice."""

    index: int
    text: str
    token_ids: list[int]
    tokens: list[str]
    temperatures: list[float]
    updated: list[bool]
    finish_reason: str | None
    usage: dict[str, int] | None = None  # only on the final, usage-only piece (index -1)


def _choice(c: dict[str, Any]) -> Choice:
    t = c.get("temperature_trace") or {}
    text = c["message"]["content"] if "message" in c else c.get("text", "")
    return Choice(
        c["index"],
        text or "",
        c.get("finish_reason"),
        t.get("token_ids", []),
        t.get("tokens", []),
        t.get("temperatures", []),
        t.get("updated", []),
    )


def _pieces(chunk: dict[str, Any]) -> list[Piece]:
    if "error" in chunk:
        err = chunk["error"]
        raise ServerError(err.get("message", "error in stream"), None, err.get("type"), err.get("code"))
    out = []
    for c in chunk.get("choices", []):
        t = c.get("temperature_trace") or {}
        text = (c.get("delta") or {}).get("content") if "delta" in c else c.get("text")
        out.append(
            Piece(
                c["index"],
                text or "",
                t.get("token_ids", []),
                t.get("tokens", []),
                t.get("temperatures", []),
                t.get("updated", []),
                c.get("finish_reason"),
            )
        )
    if chunk.get("usage"):
        out.append(Piece(-1, "", [], [], [], [], None, usage=chunk["usage"]))
    return out


class _Base:
    def __init__(
        self, base_url: str = DEFAULT_URL, api_key: str | None = None, model: str | None = None, timeout: float = 600.0
    ):
        self.base_url = base_url.rstrip("/")
        if self.base_url.endswith("/v1"):
            self.base_url = self.base_url[:-3]
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.model = model
        self.timeout = timeout

    def _request(
        self, prompt: str, model: str, *, chat: bool, stream: bool, system: str | None = None, **options
    ) -> tuple[str, dict]:
        body: dict[str, Any] = {"model": model, "stream": stream}
        if stream:  # the usage arrives as a last, choice-less piece only when asked for
            body["stream_options"] = {"include_usage": True}
        if chat:
            body["messages"] = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": prompt}
            ]
        else:
            body["prompt"] = prompt
        body.update({k: v for k, v in options.items() if v is not None})
        return ("/v1/chat/completions" if chat else "/v1/completions"), body

    @staticmethod
    def _completion(data: dict) -> Completion:
        return Completion([_choice(c) for c in data["choices"]], data.get("usage", {}), data.get("model", ""), data)

    @staticmethod
    def _sse_data(line: str) -> dict | None:
        if not line.startswith("data:"):
            return None
        payload = line[5:].strip()
        return None if payload == "[DONE]" else json.loads(payload)


class Client(_Base):
    """Synchronous client. ``complete`` returns a Completion; ``stream`` yields Pieces."""

    def _http(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers=self.headers, timeout=self.timeout)

    def _call(self, method: str, path: str, **kw) -> httpx.Response:
        try:
            with self._http() as http:
                response = http.request(method, path, **kw)
        except httpx.TransportError as e:
            raise ConnectionFailed(
                f"cannot reach the server at {self.base_url} ({e}); is `introllm serve` running?"
            ) from None
        _raise_for(response)
        return response

    def health(self) -> dict:
        return self._call("GET", "/health").json()

    def head_range(self) -> tuple[float, float]:
        """(tau_min, tau_max) of the served head, from the playground's ``/ui/config``; the paper's
        (0.6, 1.5) when the server does not say (``--no-ui``, or another server)."""
        try:
            cfg = self._call("GET", "/ui/config").json()
            return float(cfg["tau_min"]), float(cfg["tau_max"])
        except (IntroLLMError, KeyError, ValueError, TypeError):
            return 0.6, 1.5

    def models(self) -> list[str]:
        return [m["id"] for m in self._call("GET", "/v1/models").json()["data"]]

    def _model(self) -> str:
        if self.model is None:
            self.model = self.models()[0]
        return self.model

    def complete(self, prompt: str, *, chat: bool = False, **options) -> Completion:
        """Options: max_tokens, temperature, policy, n, seed, stop, top_p, top_k, logprobs, system."""
        path, body = self._request(prompt, self._model(), chat=chat, stream=False, **options)
        return self._completion(self._call("POST", path, json=body).json())

    def stream(self, prompt: str, *, chat: bool = False, **options) -> Iterator[Piece]:
        path, body = self._request(prompt, self._model(), chat=chat, stream=True, **options)
        try:
            with self._http() as http, http.stream("POST", path, json=body) as response:
                if response.status_code >= 400:
                    response.read()
                    _raise_for(response)
                for line in response.iter_lines():
                    data = self._sse_data(line)
                    if data is not None:
                        yield from _pieces(data)
        except httpx.TransportError as e:
            raise ConnectionFailed(
                f"cannot reach the server at {self.base_url} ({e}); is `introllm serve` running?"
            ) from None


class AsyncClient(_Base):
    """Asynchronous twin of Client: ``await complete(...)``, ``async for piece in stream(...)``."""

    def _http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, headers=self.headers, timeout=self.timeout)

    async def _call(self, method: str, path: str, **kw) -> httpx.Response:
        try:
            async with self._http() as http:
                response = await http.request(method, path, **kw)
        except httpx.TransportError as e:
            raise ConnectionFailed(
                f"cannot reach the server at {self.base_url} ({e}); is `introllm serve` running?"
            ) from None
        _raise_for(response)
        return response

    async def health(self) -> dict:
        return (await self._call("GET", "/health")).json()

    async def models(self) -> list[str]:
        return [m["id"] for m in (await self._call("GET", "/v1/models")).json()["data"]]

    async def _model(self) -> str:
        if self.model is None:
            self.model = (await self.models())[0]
        return self.model

    async def complete(self, prompt: str, *, chat: bool = False, **options) -> Completion:
        path, body = self._request(prompt, await self._model(), chat=chat, stream=False, **options)
        return self._completion((await self._call("POST", path, json=body)).json())

    async def stream(self, prompt: str, *, chat: bool = False, **options) -> AsyncIterator[Piece]:
        path, body = self._request(prompt, await self._model(), chat=chat, stream=True, **options)
        try:
            async with self._http() as http, http.stream("POST", path, json=body) as response:
                if response.status_code >= 400:
                    await response.aread()
                    _raise_for(response)
                async for line in response.aiter_lines():
                    data = self._sse_data(line)
                    if data is not None:
                        for piece in _pieces(data):
                            yield piece
        except httpx.TransportError as e:
            raise ConnectionFailed(
                f"cannot reach the server at {self.base_url} ({e}); is `introllm serve` running?"
            ) from None

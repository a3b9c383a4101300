"""Hand-written HTTP/1.1, for what a well-behaved client library will not do: send odd headers
(``raw_request``), or hold hundreds of keep-alive streams for a fraction of the CPU an HTTP library costs
(``RawConnection``, under the benchmarks' SSE client). ``http_call`` is the plain JSON call of the control
APIs, on the standard library only.
"""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.error
import urllib.request
from typing import Any


class HTTPCallError(RuntimeError):
    """``http_call`` got an error status; the message has the status and the body."""


def http_call(method: str, url: str, body: Any = None, timeout: float = 10.0, parse: bool = True) -> Any:
    """One request with an optional JSON body; the parsed JSON answer (``parse=False``: the raw bytes)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as e:
        raise HTTPCallError(f"{method} {url} -> {e.code}: {e.read().decode(errors='replace')}") from None
    if not parse:
        return raw
    return json.loads(raw) if raw else None


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    """Status and lower-cased headers of a response head (status line + header lines)."""
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return status, headers


def is_chunked(headers: dict[str, str]) -> bool:
    return "chunked" in headers.get("transfer-encoding", "").lower()


def dechunk(content: bytes) -> bytes:
    """The payload of a complete chunked body."""
    out, rest = b"", content
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";", 1)[0], 16)
        if size == 0:
            break
        out, rest = out + rest[:size], rest[size + 2:]
    return out


def raw_request(port: int, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes = b"",
                timeout: float = 10.0) -> tuple[int, dict[str, str], Any]:
    """One request on a fresh connection to 127.0.0.1 with exactly the given headers; (status, headers,
    the body as JSON when it parses, else as bytes)."""
    head = [f"{method} {path} HTTP/1.1".encode(), b"Host: 127.0.0.1", b"Connection: close",
            b"Content-Length: " + str(len(body)).encode()]
    head += [name + b": " + value for name, value in headers]
    payload = b"\r\n".join(head) + b"\r\n\r\n" + body
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    header_blob, _, content = b"".join(chunks).partition(b"\r\n\r\n")
    status, parsed = parse_head(header_blob)
    if parsed.get("transfer-encoding") == "chunked":
        content = dechunk(content)
    try:
        decoded: Any = json.loads(content) if content else None
    except ValueError:
        decoded = content
    return status, parsed, decoded


class RawConnection:
    """One keep-alive HTTP/1.1 connection (asyncio streams): write a POST, read the head, then the body
    either at once (``content-length``) or chunk by chunk (``read_chunk``)."""

    def __init__(self, host: str, port: int, headers: dict[str, str] | None = None) -> None:
        self.host = host
        self.port = port
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self._head = f"Host: {host}:{port}\r\ncontent-type: application/json\r\naccept: text/event-stream\r\n{extra}"
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except (OSError, ConnectionError):
                pass
        self._reader = self._writer = None

    async def connect(self) -> None:
        """Open the connection unless it is open (a request after ``close`` reconnects)."""
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)

    def post(self, path: str, body: bytes) -> None:
        """Send ``POST path`` with ``body`` (after ``connect``)."""
        assert self._writer is not None, "not connected"
        self._writer.write(f"POST {path} HTTP/1.1\r\n{self._head}content-length: {len(body)}\r\n\r\n".encode() + body)

    @property
    def reader(self) -> asyncio.StreamReader:
        assert self._reader is not None, "not connected"
        return self._reader

    async def read_head(self) -> tuple[int, dict[str, str]]:
        return parse_head((await self.reader.readuntil(b"\r\n\r\n"))[:-4])

    async def read_sized(self, headers: dict[str, str]) -> bytes:
        n = int(headers.get("content-length", "0"))
        return await self.reader.readexactly(n) if n else b""

    async def read_chunk(self) -> bytes:
        """The next chunk of a chunked body; b"" at its end (trailers consumed)."""
        reader = self.reader
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")  # end of trailers
            return b""
        return (await reader.readexactly(size + 2))[:-2]

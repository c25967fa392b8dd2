"""The raw Redis connections :func:`pipeline.adapters.redis.client.bulk` writes to.

A :class:`BulkWire` holds a small pool of asyncio stream connections to one Redis server
(TCP, TLS or a unix socket) and runs a batch of commands on one of them in a single round
trip: the commands are packed with ``hiredis.pack_command`` into one write, the replies
parsed by a ``hiredis.Reader`` (public hiredis API, both of them C), with no per-reply
timeout, health check or callback. It costs about a microsecond a command, where a
redis-py pipeline costs about 16.

Where to connect, and how, comes from a redis-py client's public
``connection_pool.connection_class`` and ``connection_pool.connection_kwargs``: host and
port or socket path, TLS options (``rediss://``, with redis-py's own defaults: certificate
and host name checked), username, password or credential provider, db, client name,
timeouts and the RESP version. A new connection says ``HELLO 3`` (with ``AUTH`` when there
are credentials), so replies come in the types redis-py's default RESP3 gives (``HGETALL``
a dict, ``SMEMBERS`` a list, nil ``None``); with ``protocol=2`` it says ``AUTH`` instead and
replies come in RESP2 types (``HGETALL`` a flat list). Then ``SELECT`` for a db other than
0, all in one round trip.

A connection goes back to the pool only clean: every reply of its batch read. A timeout,
a broken connection or a protocol error closes it. An error reply does not: the rest of
the batch's replies are read, then the first error reply is raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import hiredis
from redis import exceptions as redis_errors
from redis.asyncio.connection import (
    ConnectionPool,
    RedisSSLContext,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.credentials import CredentialProvider

T = TypeVar("T")

MAX_IDLE: Final = 8  # idle connections kept per wire; more are closed when released
IDLE_S: Final = 30.0  # an idle connection older than this is closed rather than reused
_COMMANDS_PER_TIMEOUT: Final = 10_000  # one socket timeout of deadline per this many commands
_READ: Final = 1 << 20  # bytes asked of the socket per read (and the stream's buffer limit)
_NOT_ENOUGH: Final = object()  # hiredis's "no whole reply yet" (False is a RESP3 reply)

# Error replies as the exceptions redis-py raises for them; any other is a ResponseError.
_ERRORS: Final[dict[str, type[redis_errors.RedisError]]] = {
    "LOADING": redis_errors.BusyLoadingError,
    "READONLY": redis_errors.ReadOnlyError,
    "OOM": redis_errors.OutOfMemoryError,
    "NOSCRIPT": redis_errors.NoScriptError,
    "NOPERM": redis_errors.NoPermissionError,
    "EXECABORT": redis_errors.ExecAbortError,
    "WRONGPASS": redis_errors.AuthenticationError,
    "NOAUTH": redis_errors.AuthenticationError,
}


def reply_error(message: str) -> redis_errors.RedisError:
    """The exception for an error reply (``-ERR ...``), as redis-py would raise it."""
    if "max number of clients reached" in message:
        return redis_errors.ConnectionError(message)
    return _ERRORS.get(message.split(" ", 1)[0], redis_errors.ResponseError)(message)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where and how a wire connects: the server, TLS, credentials, db and timeouts."""

    host: str
    port: int
    path: str | None  # a unix socket, instead of host and port
    tls: ssl.SSLContext | None
    username: str | None
    password: str | None
    credentials: CredentialProvider | None
    db: int
    client_name: str | None
    protocol: int  # RESP version: 3 (HELLO 3) or 2
    socket_timeout: float | None
    connect_timeout: float | None
    keepalive: bool

    @classmethod
    def of_pool(cls, pool: ConnectionPool) -> Endpoint:
        """The endpoint of a redis-py asyncio pool (``Redis.connection_pool``), from its
        public ``connection_class`` and ``connection_kwargs``."""
        kwargs = dict(pool.connection_kwargs)
        kind = pool.connection_class
        unix = issubclass(kind, UnixDomainSocketConnection)
        tls = None
        if issubclass(kind, SSLConnection):
            options: dict[str, Any] = {"cert_reqs": "required", "check_hostname": True}
            options.update((k[4:], v) for k, v in kwargs.items() if k.startswith("ssl_"))
            tls = RedisSSLContext(**options).get()
        protocol = int(kwargs.get("protocol") or 3)
        if protocol not in (2, 3):
            raise redis_errors.ConnectionError("protocol must be either 2 or 3")
        socket_timeout = kwargs.get("socket_timeout", 5.0)
        return cls(
            host=str(kwargs.get("host", "localhost")),
            port=int(kwargs.get("port", 6379)),
            path=str(kwargs.get("path", "")) if unix else None,
            tls=tls,
            username=kwargs.get("username"),
            password=kwargs.get("password"),
            credentials=kwargs.get("credential_provider"),
            db=int(kwargs.get("db") or 0),
            client_name=kwargs.get("client_name"),
            protocol=protocol,
            socket_timeout=socket_timeout,
            connect_timeout=kwargs.get("socket_connect_timeout") or socket_timeout,
            keepalive=bool(kwargs.get("socket_keepalive", True)),
        )

    def where(self) -> str:
        return self.path if self.path is not None else f"{self.host}:{self.port}"


class _Connection:
    """One stream connection and the hiredis reader of its replies."""

    __slots__ = ("errors", "idle_since", "loop", "parser", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.loop = asyncio.get_running_loop()
        self.idle_since = self.loop.time()
        # Error replies the parser met in the current batch (nested ones included).
        self.errors: list[redis_errors.RedisError] = []
        self.parser = hiredis.Reader(
            protocolError=redis_errors.InvalidResponse,
            replyError=self._error,
            notEnoughData=_NOT_ENOUGH,
        )

    def _error(self, message: str) -> redis_errors.RedisError:
        error = reply_error(message)
        self.errors.append(error)
        return error

    def reusable(self, loop: asyncio.AbstractEventLoop, now: float) -> bool:
        return (
            self.loop is loop
            and now - self.idle_since < IDLE_S
            and not self.reader.at_eof()
            and not self.writer.is_closing()
        )

    def close(self) -> None:
        """Closes the connection (not waiting for it). One of a loop that is gone, or of
        another loop, is only dropped: its transport cannot be touched from here."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if self.loop is running and not self.writer.is_closing():
            self.writer.close()

    async def exchange(self, payload: bytes, count: int) -> list[Any]:
        """Writes ``payload`` (``count`` packed commands) and reads their ``count``
        replies, error replies included (as exceptions, in :attr:`errors` too)."""
        self.errors.clear()
        self.writer.write(payload)
        await self.writer.drain()
        replies: list[Any] = []
        append = replies.append
        gets = self.parser.gets
        feed = self.parser.feed
        read = self.reader.read
        push = hiredis.PushNotification
        while len(replies) < count:
            data = await read(_READ)
            if not data:
                raise redis_errors.ConnectionError("Connection closed by server.")
            feed(data)
            while (reply := gets()) is not _NOT_ENOUGH:
                if reply.__class__ is not push:  # RESP3 pushes are no command's reply
                    append(reply)
        if len(replies) != count or self.parser.has_data():
            raise redis_errors.InvalidResponse(
                f"{len(replies)} replies to {count} commands: the connection is out of step"
            )
        return replies


class BulkWire:
    """A pool of raw connections to one Redis server, for :meth:`execute`. At most
    ``max_idle`` idle connections are kept; as many as there are concurrent batches are
    open. Call :meth:`aclose` once done (the redis-py client of
    :func:`pipeline.adapters.redis.client.redis_client` does, in its ``aclose()``)."""

    def __init__(self, pool: ConnectionPool, *, max_idle: int = MAX_IDLE) -> None:
        self._pool = pool
        self._endpoint: Endpoint | None = None  # from the pool, on the first connect
        self._max_idle = max_idle
        self._idle: list[_Connection] = []
        self._closed = False

    @property
    def idle_connections(self) -> int:
        """How many connections wait in the pool for the next batch."""
        return len(self._idle)

    async def execute(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Runs ``commands`` in one round trip and returns their replies. Raises the first
        error reply (after reading every reply), ``redis.exceptions.TimeoutError`` when the
        replies take longer than the socket timeout per 10,000 commands, and
        ``redis.exceptions.ConnectionError`` when the server cannot be reached or the
        connection breaks."""
        if not commands:
            return []
        payload = b"".join([hiredis.pack_command(c) for c in commands])
        conn = await self._acquire()
        endpoint = self._endpoint
        assert endpoint is not None  # set by the connect that made conn
        timeout = (endpoint.socket_timeout or 30.0) * (1 + len(commands) // _COMMANDS_PER_TIMEOUT)
        try:
            replies = await _within(
                timeout, conn.exchange(payload, len(commands)), endpoint, "reading replies from"
            )
        except BaseException:
            conn.close()
            raise
        failed = bool(conn.errors)  # the parser met an error reply (maybe a nested one)
        self._release(conn)
        if failed:
            first = next((r for r in replies if isinstance(r, redis_errors.RedisError)), None)
            if first is not None:
                raise first
        return replies

    async def aclose(self) -> None:
        """Closes the idle connections; any in use is closed when its batch ends."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        for conn in idle:
            if conn.writer.is_closing() and conn.loop is asyncio.get_running_loop():
                with contextlib.suppress(OSError):
                    await conn.writer.wait_closed()

    async def _acquire(self) -> _Connection:
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._idle:
            conn = self._idle.pop()  # the most recently used first
            if conn.reusable(loop, now):
                return conn
            conn.close()
        return await self._connect()

    def _release(self, conn: _Connection) -> None:
        if self._closed or len(self._idle) >= self._max_idle:
            conn.close()
            return
        conn.idle_since = conn.loop.time()
        self._idle.append(conn)

    async def _connect(self) -> _Connection:
        if self._closed:
            raise redis_errors.ConnectionError("the client is closed")
        if self._endpoint is None:
            self._endpoint = Endpoint.of_pool(self._pool)
        e = self._endpoint

        async def open_streams() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            if e.path is not None:
                return await asyncio.open_unix_connection(e.path, limit=_READ)
            return await asyncio.open_connection(e.host, e.port, ssl=e.tls, limit=_READ)

        reader, writer = await _within(e.connect_timeout, open_streams(), e, "connecting to")
        conn = _Connection(reader, writer)
        try:
            if e.path is None:
                _tune(writer, keepalive=e.keepalive)
            await _within(e.socket_timeout, _handshake(conn, e), e, "setting up")
        except BaseException:
            conn.close()
            raise
        return conn


async def _handshake(conn: _Connection, e: Endpoint) -> None:
    """Authenticates, picks the RESP version and the db, in one round trip."""
    auth: tuple[str, ...] = ()
    if e.credentials is not None:
        auth = tuple(await e.credentials.get_credentials_async())
    elif e.username or e.password:
        auth = (e.username, e.password or "") if e.username else (e.password or "",)
    commands: list[tuple[Any, ...]] = []
    if e.protocol == 3:
        if len(auth) == 1:
            auth = ("default", *auth)
        commands.append(("HELLO", 3, *(("AUTH", *auth) if auth else ())))
    elif auth:
        commands.append(("AUTH", *auth))
    if e.client_name:
        commands.append(("CLIENT", "SETNAME", e.client_name))
    if e.db:
        commands.append(("SELECT", e.db))
    if not commands:
        return
    replies = await conn.exchange(
        b"".join([hiredis.pack_command(c) for c in commands]), len(commands)
    )
    for command, reply in zip(commands, replies, strict=True):
        if isinstance(reply, redis_errors.RedisError):
            kind = (
                redis_errors.AuthenticationError
                if command[0] in ("HELLO", "AUTH")
                else redis_errors.ConnectionError
            )
            raise kind(f"{command[0]} refused by {e.where()}: {reply}") from reply


def _tune(writer: asyncio.StreamWriter, *, keepalive: bool) -> None:
    """TCP_NODELAY (asyncio's default anyway) and, as redis-py does, keepalive."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return
    with contextlib.suppress(OSError, TypeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if keepalive:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)


async def _within(timeout: float | None, work: Awaitable[T], e: Endpoint, doing: str) -> T:
    """Awaits ``work`` for at most ``timeout`` seconds, with asyncio's and the socket's
    errors as redis-py's: TimeoutError, and ConnectionError for a failing socket."""
    try:
        async with asyncio.timeout(timeout):
            return await work
    except TimeoutError as exc:  # before OSError, of which it is one
        raise redis_errors.TimeoutError(
            f"Timeout {doing} {e.where()} (within {timeout:g}s)"
        ) from exc
    except OSError as exc:  # ssl.SSLError included
        raise redis_errors.ConnectionError(f"Error {doing} {e.where()}: {exc}") from exc

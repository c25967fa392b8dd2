"""bulk()'s own connections (pipeline/adapters/redis/wire.py) on a real Redis server of
their own: they connect as the client's URL says (password, ACL user, db, unix socket,
TLS), pool at most a few connections, and never pool one left with unread replies (a
timeout, a server that hangs up, a cancelled batch)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis import exceptions as redis_errors
from redis.asyncio import Redis

from pipeline.adapters.redis.client import BulkRedis, RedisClient, bulk, guard, redis_client
from pipeline.adapters.redis.presence import _fields
from pipeline.adapters.redis.wire import MAX_IDLE, reply_error
from pipeline.errors import IndexUnavailable
from tests.support.services import load_localstack

PASSWORD = "wire-secret"
ALICE = ("alice", "alice-secret")


@dataclass(frozen=True)
class Server:
    port: int
    tls_port: int
    socket: Path
    ca: Path

    def admin(self, db: int = 0) -> Redis:
        return Redis(host="127.0.0.1", port=self.port, password=PASSWORD, db=db)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A redis-server with a password, an ACL user, a unix socket and a TLS port."""
    for tool in ("redis-server", "openssl"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing (Debian's redis-server and openssl)", pytrace=False)
    home = tmp_path_factory.mktemp("wire-redis")
    cert, key = home / "server.crt", home / "server.key"
    openssl = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    openssl += ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    openssl += ["-keyout", str(key), "-out", str(cert)]
    subprocess.run(
        openssl,
        check=True,
        capture_output=True,
    )
    port, tls_port = load_localstack().free_ports(2)
    sock = home / "redis.sock"
    args = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
    args += ["--appendonly", "no", "--dir", str(home), "--requirepass", PASSWORD]
    args += ["--user", ALICE[0], "on", f">{ALICE[1]}", "~*", "&*", "+@all"]
    args += ["--unixsocket", str(sock), "--unixsocketperm", "700"]
    args += ["--tls-port", str(tls_port), "--tls-cert-file", str(cert)]
    args += ["--tls-key-file", str(key), "--tls-ca-cert-file", str(cert)]
    args += ["--tls-auth-clients", "no"]
    with open(home / "redis.log", "wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while not (sock.exists() and load_localstack().port_open(tls_port)):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"redis-server did not start: {(home / 'redis.log').read_text()}")
            time.sleep(0.05)
        yield Server(port, tls_port, sock, cert)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _urls(s: Server) -> dict[str, tuple[str, str | None, int, str]]:
    """URL form -> (url, password argument, db, ACL user the connection is)."""
    return {
        "password in the url": (f"redis://:{PASSWORD}@127.0.0.1:{s.port}/3", None, 3, "default"),
        "acl user": (f"redis://{ALICE[0]}:{ALICE[1]}@127.0.0.1:{s.port}/4", None, 4, "alice"),
        "password apart": (f"redis://127.0.0.1:{s.port}/5", PASSWORD, 5, "default"),
        "unix socket": (f"unix://{s.socket}?db=6", PASSWORD, 6, "default"),
        "tls": (
            f"rediss://:{PASSWORD}@127.0.0.1:{s.tls_port}/7?ssl_ca_certs={s.ca}",
            None,
            7,
            "default",
        ),
    }


@pytest.mark.parametrize(
    "form", ["password in the url", "acl user", "password apart", "unix socket", "tls"]
)
def test_bulk_connects_as_the_url_says(server: Server, form: str) -> None:
    url, password, db, user = _urls(server)[form]
    key = f"wire-{uuid.uuid4().hex}"

    async def body() -> None:
        client = redis_client(url, password=password, socket_timeout_s=5)
        admin = server.admin(db)
        try:
            info, _, value = await bulk(
                client, [("CLIENT", "INFO"), ("SET", key, "v"), ("GET", key)]
            )
            fields = dict(f.split("=", 1) for f in info.decode().split())
            assert (fields["db"], fields["user"], fields["resp"]) == (str(db), user, "3")
            assert value == b"v"
            assert await admin.get(key) == b"v"  # in the URL's db, as redis-py's commands
            assert await client.get(key) == b"v"
            await bulk(client, [("DEL", key)])
        finally:
            await client.aclose()
            await admin.aclose()

    asyncio.run(body())


def test_replies_come_in_the_types_the_callers_read(server: Server) -> None:
    """RESP3 by default (as redis-py's client): HGETALL a dict; a client made for RESP2
    gets RESP2's flat list, which the presence store reads the same."""
    key = f"wire-{uuid.uuid4().hex}"
    url = f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0"

    async def body() -> None:
        resp3 = redis_client(url, password=None, socket_timeout_s=5)
        resp2 = BulkRedis.from_url(url, protocol=2)
        try:
            replies = await bulk(
                resp3,
                [
                    ("HSET", key, "a", "1", "b", "2"),
                    ("HGETALL", key),
                    ("SMISMEMBER", f"{key}:s", "x"),
                    ("SET", f"{key}:p", "new", "GET"),
                    ("SET", f"{key}:p", "newer", "GET"),
                    ("EXISTS", key),
                ],
            )
            assert replies == [2, {b"a": b"1", b"b": b"2"}, [0], None, b"new", 1]
            flat, info = await bulk(resp2, [("HGETALL", key), ("CLIENT", "INFO")])
            assert info.split()[-1] == b"resp=2"
            assert isinstance(flat, list)
            assert _fields(flat) == _fields(replies[1]) == {b"a": b"1", b"b": b"2"}
            await bulk(resp3, [("DEL", key, f"{key}:p")])
        finally:
            await resp3.aclose()
            await resp2.aclose()

    asyncio.run(body())


def test_a_wrong_password_is_redis_unreachable(server: Server) -> None:
    url = f"redis://:wrong@127.0.0.1:{server.port}/0"

    async def body() -> None:
        client = redis_client(url, password=None, socket_timeout_s=5)
        try:
            with pytest.raises(IndexUnavailable, match="redis unreachable during x"):
                await guard("x", lambda: bulk(client, [("PING",)]))
            with pytest.raises(redis_errors.AuthenticationError):
                await bulk(client, [("PING",)])
        finally:
            await client.aclose()

    asyncio.run(body())


def test_the_pool_keeps_a_few_connections_and_closes_them_with_the_client(server: Server) -> None:
    name = f"wire-{uuid.uuid4().hex[:8]}"
    url = f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0?client_name={name}"

    async def ours(admin: Redis, expected: int) -> int:
        """How many connections the server lists under ``name``, once that is ``expected``
        (the server notices closed connections a little later) or a second has passed."""
        for _ in range(50):
            count = sum(1 for c in await admin.client_list() if c["name"] == name)
            if count == expected:
                break
            await asyncio.sleep(0.02)
        return count

    async def body() -> None:
        client = redis_client(url, password=None, socket_timeout_s=5)
        assert isinstance(client, BulkRedis)
        admin = server.admin()
        try:
            ids = [(await bulk(client, [("CLIENT", "ID")]))[0] for _ in range(5)]
            assert len(set(ids)) == 1  # one connection, used again and again
            assert client.wire.idle_connections == 1
            await asyncio.gather(*(bulk(client, [("CLIENT", "ID")] * 500) for _ in range(20)))
            assert client.wire.idle_connections == MAX_IDLE
            assert await ours(admin, MAX_IDLE) == MAX_IDLE
            await client.aclose()
            assert client.wire.idle_connections == 0
            assert await ours(admin, 0) == 0
        finally:
            await client.aclose()
            await admin.aclose()

    asyncio.run(body())


def test_a_plain_redis_client_gets_a_connection_for_the_call(server: Server) -> None:
    async def body() -> None:
        client = Redis(host="127.0.0.1", port=server.port, password=PASSWORD)
        try:
            assert await bulk(client, [("PING",), ("ECHO", "x")]) == [b"PONG", b"x"]
        finally:
            await client.aclose()

    asyncio.run(body())


def test_an_error_reply_is_raised_after_the_whole_batch_is_read(server: Server) -> None:
    key = f"wire-{uuid.uuid4().hex}"
    url = f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0"

    async def body() -> None:
        client = redis_client(url, password=None, socket_timeout_s=5)
        assert isinstance(client, BulkRedis)
        try:
            with pytest.raises(redis_errors.ResponseError, match="WRONGTYPE"):
                await bulk(client, [("SET", key, "x"), ("SADD", key, "m"), ("INCR", key)])
            # The batch ran to its end (INCR after the error reply failed on its own), and
            # its connection, all read, is back in the pool.
            assert client.wire.idle_connections == 1
            with pytest.raises(redis_errors.ResponseError, match="not an integer"):
                await bulk(client, [("GET", key), ("INCR", key)])
            assert await bulk(client, [("GET", key), ("DEL", key)]) == [b"x", 1]
        finally:
            await client.aclose()

    asyncio.run(body())


def test_error_replies_map_to_redis_py_exceptions() -> None:
    assert type(reply_error("ERR unknown command")) is redis_errors.ResponseError
    assert type(reply_error("LOADING Redis is loading")) is redis_errors.BusyLoadingError
    assert type(reply_error("READONLY You can't write")) is redis_errors.ReadOnlyError
    assert type(reply_error("NOAUTH Authentication required.")) is (
        redis_errors.AuthenticationError
    )
    assert isinstance(
        reply_error("ERR max number of clients reached"), redis_errors.ConnectionError
    )


# -- a fake server, to break connections on purpose -----------------------------------------


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def fake_redis(handler: Handler) -> AsyncIterator[RedisClient]:
    """A client of a TCP server that runs ``handler`` on each connection once it has
    answered the connection's HELLO."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"HELLO\r\n$1\r\n3\r\n")
            writer.write(b"%0\r\n")
            await handler(reader, writer)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    srv = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    client = redis_client(f"redis://127.0.0.1:{port}/0", password=None, socket_timeout_s=0.3)
    try:
        yield client
    finally:
        await client.aclose()
        srv.close()
        await srv.wait_closed()


def test_a_server_that_never_answers_times_out_and_the_connection_is_dropped() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1 << 16)
        writer.write(b":1\r\n")  # the first reply of three, then nothing
        await reader.read(1)  # until the client hangs up

    async def body() -> None:
        async with fake_redis(silent) as client:
            assert isinstance(client, BulkRedis)
            started = time.monotonic()
            with pytest.raises(IndexUnavailable, match="redis unreachable during x"):
                await guard("x", lambda: bulk(client, [("INCR", "a")] * 3))
            assert time.monotonic() - started < 3
            with pytest.raises(redis_errors.TimeoutError):
                await bulk(client, [("INCR", "a")] * 3)
            assert client.wire.idle_connections == 0

    asyncio.run(body())


def test_a_server_that_hangs_up_mid_batch_is_a_connection_error() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1 << 16)
        writer.write(b":1\r\n*2\r\n$1\r\na")  # a reply and a half

    async def body() -> None:
        async with fake_redis(hang_up) as client:
            assert isinstance(client, BulkRedis)
            with pytest.raises(redis_errors.ConnectionError):
                await bulk(client, [("INCR", "a"), ("HGETALL", "h")])
            assert client.wire.idle_connections == 0

    asyncio.run(body())


def test_a_cancelled_batch_does_not_leave_its_connection_in_the_pool() -> None:
    answered = asyncio.Event()

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1 << 16)
        writer.write(b":1\r\n")
        answered.set()
        await reader.read(1)

    async def body() -> None:
        async with fake_redis(slow) as client:
            assert isinstance(client, BulkRedis)
            task = asyncio.create_task(bulk(client, [("INCR", "a")] * 2))
            await answered.wait()
            await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert client.wire.idle_connections == 0

    asyncio.run(body())


def test_an_unreachable_server_is_a_connection_error() -> None:
    port = load_localstack().free_ports(1)[0]

    async def body() -> None:
        client = redis_client(f"redis://127.0.0.1:{port}/0", password=None, socket_timeout_s=1)
        try:
            with pytest.raises(redis_errors.ConnectionError):
                await bulk(client, [("PING",)])
        finally:
            await client.aclose()

    asyncio.run(body())

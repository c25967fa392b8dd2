"""A private three-master Redis Cluster for the tests that hold the adapters to the rule
"every key works unchanged on Redis Cluster".

Three ``redis-server --cluster-enabled yes`` processes on free ports under a temporary
directory, joined by ``redis-cli --cluster create``; :meth:`LocalRedisCluster.start`
returns once every node reports ``cluster_state:ok``. Always private: ``REDIS_URL`` names
a single server, never this cluster. If it cannot start, :class:`ClusterStartError` names what
is missing, and the session fails (never skips).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from redis.asyncio import RedisCluster

from tests.support.services import ServiceError, load_localstack

MASTERS = 3


class ClusterStartError(ServiceError):
    pass


class LocalRedisCluster:
    """``MASTERS`` Redis Cluster masters (no replicas, no persistence) under ``state_dir``.

    ``stop()`` terminates the servers this object started and is safe to call twice."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir.resolve()
        # Client and cluster-bus ports chosen explicitly: the default bus port (client port
        # + 10000) of a random free port can be taken, or above 65535.
        ports = load_localstack().free_ports(2 * MASTERS)
        self.ports: list[int] = ports[:MASTERS]
        self.bus_ports: list[int] = ports[MASTERS:]
        self._servers: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        """A startup node; a cluster client discovers the others from it."""
        return f"redis://127.0.0.1:{self.ports[0]}"

    def start(self, timeout_s: float = 30.0) -> str:
        """Start and join the nodes; returns :attr:`url`. Raises :class:`ClusterStartError`."""
        missing = [name for name in ("redis-server", "redis-cli") if shutil.which(name) is None]
        if missing:
            raise ClusterStartError(
                "cannot start the Redis Cluster, missing: "
                + ", ".join(missing)
                + " (install Debian's redis-server, which brings redis-cli; .ci/run does)"
            )
        try:
            for port, bus_port in zip(self.ports, self.bus_ports, strict=True):
                self._spawn(port, bus_port)
            self._wait(lambda port: self._cli(port, "PING") == "PONG", timeout_s, "answer PING")
            create = ["redis-cli", "--cluster", "create"]
            create += [f"127.0.0.1:{port}" for port in self.ports]
            create += ["--cluster-replicas", "0", "--cluster-yes"]
            try:
                created = subprocess.run(
                    create, capture_output=True, text=True, timeout=timeout_s, check=False
                )
            except subprocess.TimeoutExpired as exc:
                raise ClusterStartError(f"{' '.join(create)} took over {timeout_s:.0f}s") from exc
            if created.returncode != 0:
                raise ClusterStartError(
                    f"redis-cli --cluster create failed:\n{created.stdout}{created.stderr}"
                )
            self._wait(
                lambda port: "cluster_state:ok" in self._cli(port, "CLUSTER", "INFO"),
                timeout_s,
                "report cluster_state:ok",
            )
        except BaseException:
            self.stop()
            raise
        return self.url

    def stop(self) -> None:
        for server in self._servers:
            server.terminate()
        for server in self._servers:
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(5)
        self._servers.clear()

    def _spawn(self, port: int, bus_port: int) -> None:
        node_dir = self.state_dir / str(port)
        node_dir.mkdir(parents=True, exist_ok=True)
        args = [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--cluster-enabled",
            "yes",
            "--cluster-port",
            str(bus_port),
            "--cluster-config-file",
            str(node_dir / "nodes.conf"),
            "--appendonly",
            "no",
            "--save",
            "",
            "--dir",
            str(node_dir),
        ]
        with open(node_dir / "redis.log", "wb") as log:  # the child keeps its own descriptor
            self._servers.append(
                subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            )

    def _cli(self, port: int, *command: str) -> str:
        """The node's reply to ``command``, or "" if it gives none in time."""
        try:
            reply = subprocess.run(
                ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *command],
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return ""
        return reply.stdout.strip()

    def _wait(self, ready: Callable[[int], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for port, server in zip(self.ports, self._servers, strict=True):
                if server.poll() is not None:
                    log = self.state_dir / str(port) / "redis.log"
                    raise ClusterStartError(f"redis-server on port {port} exited:\n{_tail(log)}")
            if all(ready(port) for port in self.ports):
                return
            time.sleep(0.1)
        raise ClusterStartError(
            f"the Redis Cluster nodes {self.ports} did not {what} within {timeout_s:.0f}s; "
            f"see the logs under {self.state_dir}"
        )


def cluster_client(url: str, *, socket_timeout_s: float = 5) -> RedisCluster:
    """An asyncio Redis Cluster client that discovers the nodes from ``url``."""
    return RedisCluster.from_url(
        url, socket_timeout=socket_timeout_s, socket_connect_timeout=socket_timeout_s
    )


def _tail(path: Path, size: int = 3000) -> str:
    try:
        return path.read_bytes()[-size:].decode("utf-8", "replace")
    except OSError:
        return ""

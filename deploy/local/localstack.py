"""Run a real single-node Apache Kafka (KRaft) broker and a real Redis server on 127.0.0.1.

For machines without a Docker engine. The broker's jars come from Maven Central through
``deploy/local/pom.xml`` and are cached outside the repository (``$ALERTFEED_CACHE`` or
``~/.cache/alertfeed``); the broker runs on the system Java 17. Redis is Debian's
``redis-server`` binary.

    python deploy/local/localstack.py up   [--state-dir .local] [--kafka-port P] [--redis-port P]
    python deploy/local/localstack.py down [--state-dir .local]
    python deploy/local/localstack.py env  [--state-dir .local]   # prints the export lines
    python deploy/local/localstack.py fetch                          # only fetch the jars

The test session imports :class:`LocalStack` from here (tests/conftest.py), so the Makefile,
the demo and the tests start the services in exactly one way. Standard library only.

Each service can also be stopped and started again on its own (``stop_kafka()`` /
``start_kafka()``, ``stop_redis()`` / ``start_redis()``), for tests that inject faults: the
broker comes back on the same port, log directory and cluster id, with every record it had
acknowledged; Redis comes back on the same port and EMPTY (it runs without persistence, and
no dump file is ever loaded), which is the "Redis restarted, data lost" fault.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
POM = HERE / "pom.xml"


class StackError(RuntimeError):
    """A local service could not be fetched or started; the message says what is missing."""


def kafka_version() -> str:
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", POM.read_text())
    if not match:
        raise StackError(f"{POM} has no <kafka.version> property")
    return match.group(1)


def cache_root() -> Path:
    return Path(os.environ.get("ALERTFEED_CACHE", Path.home() / ".cache" / "alertfeed"))


def kafka_libs() -> Path:
    """Fetch the broker's jars once (mvn dependency:copy-dependencies); return their folder."""
    libs = cache_root() / f"kafka-{kafka_version()}" / "libs"
    if libs.is_dir() and any(libs.glob("kafka_2.13-*.jar")):
        return libs
    if shutil.which("mvn") is None:
        raise StackError(
            "Maven (mvn) is missing: it fetches the Kafka broker jars (apt-get install maven)"
        )
    libs.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="libs-", dir=libs.parent))
    print(f"localstack: fetching Kafka {kafka_version()} jars into {libs} ...", file=sys.stderr)
    proc = subprocess.run(
        [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(POM),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={tmp}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise StackError(
            f"mvn could not fetch the Kafka jars:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        )
    try:
        tmp.rename(libs)
    except OSError:  # another process won the race; its copy is as good as ours
        shutil.rmtree(tmp, ignore_errors=True)
    return libs


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports (all sockets held open until every port is chosen)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class StackState:
    kafka_port: int
    controller_port: int
    redis_port: int
    kafka_pid: int | None = None
    redis_pid: int | None = None
    cluster_id: str | None = None  # set when the KRaft storage is formatted

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"


LOG4J2 = """\
Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: WARN
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: kafka.server.KafkaRaftServer
        level: INFO
"""


class LocalStack:
    """A private Kafka broker and Redis server under ``state_dir``.

    ``start()`` returns once both accept clients; ``stop()`` terminates them (SIGTERM, then
    SIGKILL) and is safe to call twice. Raises :class:`StackError` naming what is missing.

    Between the two, either service can be stopped and started again alone, for fault
    injection: :meth:`stop_kafka` / :meth:`start_kafka` keep the broker's port, KRaft log
    directory and cluster id (its data survives); :meth:`stop_redis` / :meth:`start_redis`
    keep Redis's port and bring it back empty.
    """

    def __init__(self, state_dir: Path, kafka_port: int = 0, redis_port: int = 0) -> None:
        self.state_dir = state_dir.resolve()
        self.state_file = self.state_dir / "stack.json"
        spare = [p for p in free_ports(5) if p not in (kafka_port, redis_port)]
        self.state = StackState(
            kafka_port=kafka_port or spare.pop(),
            controller_port=spare.pop(),
            redis_port=redis_port or spare.pop(),
        )
        self._children: dict[str, subprocess.Popen[bytes]] = {}

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, timeout_s: float = 90.0) -> StackState:
        missing = [name for name in ("java", "redis-server") if shutil.which(name) is None]
        if missing:
            raise StackError(
                "cannot start the local stack, missing: "
                + ", ".join(missing)
                + " (install Debian's openjdk-17-jre-headless / redis-server; .ci/run does)"
            )
        self.state_dir.mkdir(parents=True, exist_ok=True)
        for port in (self.state.kafka_port, self.state.redis_port):
            if port_open(port):
                raise StackError(f"port {port} on 127.0.0.1 is already in use")
        try:
            # Both start at once; the broker takes seconds, Redis milliseconds.
            redis_log = self._spawn_redis()
            self._format_kafka()
            kafka_log = self._spawn_kafka()
            self._save()
            deadline = time.monotonic() + timeout_s
            self._wait_kafka(kafka_log, deadline)
            self._wait_redis(redis_log, deadline)
        except BaseException:
            self.stop()
            raise
        return self.state

    def stop(self) -> None:
        self._stop_service("kafka")
        self._stop_service("redis")
        self.state_file.unlink(missing_ok=True)

    @classmethod
    def attach(cls, state_dir: Path) -> LocalStack | None:
        """The stack recorded under ``state_dir`` by an earlier ``up``, if its file exists."""
        state_file = state_dir.resolve() / "stack.json"
        if not state_file.exists():
            return None
        stack = cls.__new__(cls)
        stack.state_dir = state_dir.resolve()
        stack.state_file = state_file
        stack.state = StackState(**json.loads(state_file.read_text()))
        stack._children = {}
        return stack

    def alive(self) -> bool:
        return all(_pid_alive(pid) for pid in (self.state.kafka_pid, self.state.redis_pid))

    # -- restarts (fault injection) --------------------------------------------------------
    def stop_kafka(self, *, hard: bool = False) -> None:
        """Stop the broker: a clean shutdown (SIGTERM), or with ``hard`` a crash (SIGKILL:
        no controlled shutdown, the next start recovers the log). Its data is kept for
        :meth:`start_kafka`. Safe to call when it is not running."""
        self._stop_service("kafka", hard=hard)
        self._save()

    def start_kafka(self, timeout_s: float = 90.0) -> None:
        """Start the broker again on the same port, log directory and cluster id; returns
        once it serves. Raises StackError if it is running, was never formatted, or does
        not come up within ``timeout_s``."""
        if _pid_alive(self.state.kafka_pid):
            raise StackError("the Kafka broker is already running")
        if not (self.state_dir / "kafka" / "data" / "meta.properties").exists():
            raise StackError(f"no formatted Kafka storage under {self.state_dir}: start() first")
        self._check_port_free(self.state.kafka_port)
        log_from = self._spawn_kafka()
        self._save()
        self._wait_kafka(log_from, time.monotonic() + timeout_s)

    def restart_kafka(self, *, hard: bool = False, timeout_s: float = 90.0) -> None:
        self.stop_kafka(hard=hard)
        self.start_kafka(timeout_s)

    def stop_redis(self, *, hard: bool = False) -> None:
        """Stop Redis (SIGTERM, or SIGKILL with ``hard``); its data is gone either way.
        Safe to call when it is not running."""
        self._stop_service("redis", hard=hard)
        self._save()

    def start_redis(self, timeout_s: float = 30.0) -> None:
        """Start Redis again on the same port, empty; returns once it answers PING. Raises
        StackError if it is running or does not come up within ``timeout_s``."""
        if _pid_alive(self.state.redis_pid):
            raise StackError("redis-server is already running")
        self._check_port_free(self.state.redis_port)
        log_from = self._spawn_redis()
        self._save()
        self._wait_redis(log_from, time.monotonic() + timeout_s)

    def restart_redis(self, *, hard: bool = False, timeout_s: float = 30.0) -> None:
        self.stop_redis(hard=hard)
        self.start_redis(timeout_s)

    # -- services --------------------------------------------------------------------------
    def _spawn_redis(self) -> int:
        """Start redis-server; returns the size its log had before (where this run's
        lines begin)."""
        rdir = self.state_dir / "redis"
        rdir.mkdir(parents=True, exist_ok=True)
        # No persistence: no RDB snapshots, no AOF. Any file an earlier server (or another
        # configuration) left is removed first, so that a restart always comes back empty.
        for leftover in ("dump.rdb", "appendonly.aof"):
            (rdir / leftover).unlink(missing_ok=True)
        shutil.rmtree(rdir / "appendonlydir", ignore_errors=True)
        args = [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.state.redis_port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(rdir),
        ]
        log_path = rdir / "redis.log"
        log_from = _size(log_path)
        self.state.redis_pid = self._spawn("redis", args, log_path)
        return log_from

    def _kafka_java(self) -> list[str]:
        kdir = self.state_dir / "kafka"
        return [
            "java",
            "-Xms256m",
            "-Xmx1g",
            f"-Dlog4j2.configurationFile={kdir / 'log4j2.yaml'}",
            "-cp",
            f"{kafka_libs()}/*",
        ]

    def _format_kafka(self) -> None:
        """Write the broker's configuration and format fresh KRaft storage with a new
        cluster id (what a restart then keeps)."""
        kdir = self.state_dir / "kafka"
        data = kdir / "data"
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(parents=True)
        props = kdir / "server.properties"
        s = self.state
        props.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{s.controller_port}",
                    f"listeners=PLAINTEXT://127.0.0.1:{s.kafka_port},"
                    f"CONTROLLER://127.0.0.1:{s.controller_port}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{s.kafka_port}",
                    "controller.listener.names=CONTROLLER",
                    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                    f"log.dirs={data}",
                    "num.partitions=1",
                    "auto.create.topics.enable=false",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=4",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "log.cleaner.backoff.ms=1000",
                    "",
                ]
            )
        )
        (kdir / "log4j2.yaml").write_text(LOG4J2)
        cluster_id = "-"
        while cluster_id.startswith("-"):  # one in 64 would read as an option to the tool
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        fmt = subprocess.run(
            [
                *self._kafka_java(),
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(props),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if fmt.returncode != 0:
            raise StackError(f"formatting Kafka storage failed:\n{fmt.stdout}{fmt.stderr}")
        self.state.cluster_id = cluster_id

    def _spawn_kafka(self) -> int:
        """Start the broker on the formatted storage; returns the size its log had before
        (where this run's lines begin)."""
        kdir = self.state_dir / "kafka"
        args = [*self._kafka_java(), "-XX:+UseG1GC", "kafka.Kafka", str(kdir / "server.properties")]
        log_path = kdir / "broker.log"
        log_from = _size(log_path)
        self.state.kafka_pid = self._spawn("kafka", args, log_path)
        return log_from

    def _spawn(self, service: str, args: list[str], log_path: Path) -> int:
        with open(log_path, "ab") as log:  # the child keeps its own descriptor
            proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._children[service] = proc
        return proc.pid

    def _stop_service(self, service: str, *, hard: bool = False) -> None:
        pid = self.state.kafka_pid if service == "kafka" else self.state.redis_pid
        if pid:
            _terminate(pid, hard=hard)
        child = self._children.pop(service, None)
        if child is not None:
            child.wait(10)  # reap, so no zombie or "still running" warning is left behind
        if service == "kafka":
            self.state.kafka_pid = None
        else:
            self.state.redis_pid = None

    def _wait_kafka(self, log_from: int, deadline: float) -> None:
        """Until this run of the broker has logged that it started and its port accepts."""
        broker_log = self.state_dir / "kafka" / "broker.log"
        while time.monotonic() < deadline:
            if not _pid_alive(self.state.kafka_pid):
                raise StackError(f"the Kafka broker exited; see {broker_log}:\n{_tail(broker_log)}")
            if "started" in _read_from(broker_log, log_from) and port_open(self.state.kafka_port):
                return
            time.sleep(0.2)
        raise StackError(f"Kafka not ready in time; see {broker_log}:\n{_tail(broker_log)}")

    def _wait_redis(self, log_from: int, deadline: float) -> None:
        """Until this run of redis-server answers PING."""
        redis_log = self.state_dir / "redis" / "redis.log"
        while time.monotonic() < deadline:
            if not _pid_alive(self.state.redis_pid):
                raise StackError(f"redis-server exited:\n{_read_from(redis_log, log_from)}")
            if _redis_ping(self.state.redis_port):
                return
            time.sleep(0.05)
        raise StackError(f"Redis not ready in time; see {redis_log}:\n{_tail(redis_log)}")

    def _check_port_free(self, port: int) -> None:
        if port_open(port):
            raise StackError(f"port {port} on 127.0.0.1 is already in use")

    def _save(self) -> None:
        self.state_file.write_text(json.dumps(asdict(self.state)))


def _redis_ping(port: int) -> bool:
    """Whether a Redis server on ``port`` answers PING (RESP inline command)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _read_from(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass  # not our child (started by an earlier `up`): fall back to kill(0)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _terminate(pid: int, grace_s: float = 15.0, *, hard: bool = False) -> None:
    """SIGTERM the process group of ``pid`` and wait up to ``grace_s``, then SIGKILL it;
    with ``hard``, SIGKILL at once (a crash: no shutdown hook runs)."""
    try:
        os.killpg(pid, signal.SIGKILL if hard else signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + (0.0 if hard else grace_s)
    while time.monotonic() < deadline and _pid_alive(pid):
        time.sleep(0.1)
    if _pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        while _pid_alive(pid) and time.monotonic() < deadline + 5:
            time.sleep(0.05)


def _tail(path: Path, size: int = 3000) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-size:].decode("utf-8", "replace")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "down", "env", "fetch"])
    parser.add_argument("--state-dir", type=Path, default=Path(".local"))
    parser.add_argument("--kafka-port", type=int, default=9092)
    parser.add_argument("--redis-port", type=int, default=6379)
    args = parser.parse_args(argv)
    try:
        if args.command == "fetch":
            print(kafka_libs())
            return 0
        existing = LocalStack.attach(args.state_dir)
        if args.command == "down":
            if existing:
                existing.stop()
                print("localstack: stopped")
            return 0
        if args.command == "env":
            if not existing:
                print("localstack: not running (make up)", file=sys.stderr)
                return 1
            print(f"export ALERTFEED_KAFKA__URL=kafka://{existing.state.bootstrap_servers}")
            print(f"export ALERTFEED_REDIS__URL={existing.state.redis_url}")
            return 0
        if existing and existing.alive():
            print(
                f"localstack: already up (kafka {existing.state.bootstrap_servers}, "
                f"redis {existing.state.redis_url})"
            )
            return 0
        if existing:
            existing.stop()
        state = LocalStack(args.state_dir, args.kafka_port, args.redis_port).start()
        print(f"localstack: up (kafka {state.bootstrap_servers}, redis {state.redis_url})")
        return 0
    except StackError as exc:
        print(f"localstack: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

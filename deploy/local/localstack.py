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
        self._children: list[subprocess.Popen[bytes]] = []

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
        self._start_redis()
        try:
            self._start_kafka()
            self._save()
            self._wait(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self.state

    def stop(self) -> None:
        for pid in (self.state.kafka_pid, self.state.redis_pid):
            if pid:
                _terminate(pid)
        for child in self._children:
            child.wait(10)  # reap, so no zombie or "still running" warning is left behind
        self._children.clear()
        self.state.kafka_pid = self.state.redis_pid = None
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
        stack._children = []
        return stack

    def alive(self) -> bool:
        return all(_pid_alive(pid) for pid in (self.state.kafka_pid, self.state.redis_pid))

    # -- services --------------------------------------------------------------------------
    def _start_redis(self) -> None:
        rdir = self.state_dir / "redis"
        rdir.mkdir(parents=True, exist_ok=True)
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
        self.state.redis_pid = self._spawn(args, rdir / "redis.log")

    def _start_kafka(self) -> None:
        libs = kafka_libs()
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
        classpath = f"{libs}/*"
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        java = [
            "java",
            "-Xms256m",
            "-Xmx1g",
            f"-Dlog4j2.configurationFile={kdir / 'log4j2.yaml'}",
            "-cp",
            classpath,
        ]
        fmt = subprocess.run(
            [*java, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props)],
            capture_output=True,
            text=True,
            check=False,
        )
        if fmt.returncode != 0:
            raise StackError(f"formatting Kafka storage failed:\n{fmt.stdout}{fmt.stderr}")
        args = [*java, "-XX:+UseG1GC", "kafka.Kafka", str(props)]
        self.state.kafka_pid = self._spawn(args, kdir / "broker.log")

    def _spawn(self, args: list[str], log_path: Path) -> int:
        with open(log_path, "wb") as log:  # the child keeps its own descriptor
            proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._children.append(proc)
        return proc.pid

    def _wait(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        broker_log = self.state_dir / "kafka" / "broker.log"
        while time.monotonic() < deadline:
            if not _pid_alive(self.state.kafka_pid):
                raise StackError(f"the Kafka broker exited; see {broker_log}:\n{_tail(broker_log)}")
            if not _pid_alive(self.state.redis_pid):
                raise StackError(
                    f"redis-server exited:\n{_tail(self.state_dir / 'redis' / 'redis.log')}"
                )
            kafka_ready = port_open(self.state.kafka_port) and "started" in _tail(broker_log, 20000)
            if kafka_ready and port_open(self.state.redis_port):
                return
            time.sleep(0.2)
        raise StackError(f"Kafka/Redis not ready within {timeout_s:.0f}s; see {broker_log}")

    def _save(self) -> None:
        self.state_file.write_text(json.dumps(asdict(self.state)))


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


def _terminate(pid: int, grace_s: float = 15.0) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
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

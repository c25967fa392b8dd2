"""The shape of the house: the domain does no I/O and knows no adapter, and the application
service knows no Kafka or Redis client.

Each module is read with ``ast`` (every ``import`` and ``from ... import``, at any depth,
including those inside functions and ``if TYPE_CHECKING:`` blocks), so nothing is
imported to check it. A second check imports the whole domain in a fresh interpreter and
looks at what that loaded, which catches a forbidden library pulled in indirectly.

What pipeline/domain may not import, and why:

* the other layers: ``pipeline.adapters``, ``pipeline.service``, ``pipeline.entrypoints``
  and ``pipeline.replay`` (the domain is what they are built on, never the reverse);
* the clients of the outside world and their frameworks: faust, mode, aiokafka,
  confluent_kafka, kafka, redis, hiredis, prometheus_client, and HTTP clients (requests,
  httpx, aiohttp, urllib3);
* the standard library's I/O and concurrency: os, io, pathlib, shutil, tempfile, socket,
  ssl, select, selectors, asyncio, subprocess, multiprocessing, threading, concurrent,
  signal, urllib, http, ftplib, smtplib, sqlite3, mmap, and logging.handlers. The domain
  takes its clock, its stores and its files from its callers (ports, ``clock_ms``), which
  is what lets the offline replay run it deterministically. Plain ``logging`` is allowed:
  it is configured by the entrypoint, and a domain log line is not I/O of the domain's.

It may import the standard library otherwise, ``pipeline.errors``, ``pipeline.settings``
(plain values to read), and the computational libraries it is made of (h3, shapely, numpy
and orjson).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.services import ROOT

PACKAGE = ROOT / "pipeline"

LAYERS_ABOVE_THE_DOMAIN = (
    "pipeline.adapters",
    "pipeline.service",
    "pipeline.entrypoints",
    "pipeline.replay",
)
CLIENT_LIBRARIES = (
    "faust",
    "mode",
    "aiokafka",
    "confluent_kafka",
    "kafka",
    "redis",
    "hiredis",
    "prometheus_client",
    "requests",
    "httpx",
    "aiohttp",
    "urllib3",
)
STDLIB_IO = (
    "os",
    "io",
    "pathlib",
    "shutil",
    "tempfile",
    "socket",
    "ssl",
    "select",
    "selectors",
    "asyncio",
    "subprocess",
    "multiprocessing",
    "threading",
    "concurrent",
    "signal",
    "urllib",
    "http",
    "ftplib",
    "smtplib",
    "sqlite3",
    "mmap",
    "logging.handlers",
)
NOT_IN_THE_DOMAIN = LAYERS_ABOVE_THE_DOMAIN + CLIENT_LIBRARIES + STDLIB_IO
NOT_IN_THE_SERVICE = ("faust", "mode", "aiokafka", "confluent_kafka", "kafka", "redis", "hiredis")


def modules_under(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the module at ``path``."""
    return imports_in(
        path.read_text(encoding="utf-8"), module_name(path), is_package=path.name == "__init__.py"
    )


def imports_in(source: str, module: str, *, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``source``, the text of ``module``.
    ``from x import y`` gives ``x.y`` as well as ``x``, so that ``from pipeline import
    adapters`` is seen; relative imports are resolved against ``module``'s package."""
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def is_within(name: str, forbidden: str) -> bool:
    return name == forbidden or name.startswith(f"{forbidden}.")


def violations(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    found = set()
    for path in modules_under(folder):
        for line, name in imported_names(path):
            for banned in forbidden:
                if is_within(name, banned):
                    found.add(f"{path.relative_to(ROOT)}:{line} imports {name} ({banned})")
    return sorted(found)


def test_there_is_a_domain_and_a_service_to_check() -> None:
    assert len(modules_under("domain")) > 10
    assert modules_under("service")


def test_the_domain_imports_no_adapter_no_client_library_and_no_io() -> None:
    assert violations("domain", NOT_IN_THE_DOMAIN) == []


def test_the_domain_opens_no_file() -> None:
    calls = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for path in modules_under("domain")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "open"
    ]
    assert calls == []


def test_the_service_imports_no_kafka_or_redis_client() -> None:
    assert violations("service", NOT_IN_THE_SERVICE) == []


def test_importing_the_whole_domain_loads_no_client_library() -> None:
    """What the domain's imports pull in, indirectly too (through pipeline.settings, say)."""
    names = [module_name(p) for p in modules_under("domain")]
    script = (
        "import importlib, json, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout)
    assert [m for m in loaded if any(is_within(m, c) for c in CLIENT_LIBRARIES)] == []
    assert [m for m in loaded if any(is_within(m, c) for c in LAYERS_ABOVE_THE_DOMAIN)] == []


@pytest.mark.parametrize(
    ("source", "banned"),
    [
        ("import redis.asyncio\n", "redis"),
        ("from pipeline.adapters.memory import index\n", "pipeline.adapters"),
        ("from pipeline import adapters\n", "pipeline.adapters"),
        ("from ..adapters import metrics\n", "pipeline.adapters"),
        ("from .. import service\n", "pipeline.service"),
        ("def later() -> None:\n    import socket\n", "socket"),
        ("from os import environ\n", "os"),
    ],
)
def test_the_check_sees_every_way_of_importing(source: str, banned: str) -> None:
    """The checker is not blind: each of these, in a module pipeline/domain/probe.py,
    counts as importing ``banned``."""
    names = [name for _, name in imports_in(source, "pipeline.domain.probe")]
    assert any(is_within(n, banned) for n in names), names

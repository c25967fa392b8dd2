"""Settings as a process given exactly some environment builds them: in a child process
with that environment (as a worker is started), never by changing this process's own."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from typing import Any

from pipeline.settings import Settings
from tests.support.services import ROOT

# Runs in a child process: builds the settings from its environment (or, asked for the
# environment of a worker, computes it there), and pickles the answer back.
_CHILD = """
import pickle, sys
from pipeline.errors import ConfigurationError
from pipeline.settings import child_environment, load_settings

request, payload = pickle.load(sys.stdin.buffer)
if request == "load":
    try:
        answer = ("settings", load_settings())
    except ConfigurationError as exc:
        answer = ("error", str(exc))
else:
    answer = ("environment", child_environment(payload))
pickle.dump(answer, sys.stdout.buffer)
"""


def in_child(environ: dict[str, str], request: str, payload: object = None) -> tuple[str, Any]:
    """The answer of a child process whose environment is ``environ`` (plus PATH and the
    like, without any ALERTFEED_ variable of ours) to ``request``: ``"load"``, the settings
    it builds (``("settings", Settings)`` or ``("error", message)``); ``"environment"``, the
    :func:`~pipeline.settings.child_environment` it computes for the settings ``payload``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALERTFEED_")}
    env.update(environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-c", _CHILD],
        input=pickle.dumps((request, payload)),
        env=env,
        cwd=ROOT,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    answer: tuple[str, Any] = pickle.loads(done.stdout)
    return answer


def settings_from(environ: dict[str, str]) -> Settings:
    """The settings a process whose environment is ``environ`` (plus PATH and the like,
    without any ALERTFEED_ variable of ours) builds."""
    kind, value = in_child(environ, "load")
    assert kind == "settings", value
    assert isinstance(value, Settings)
    return value


def error_from(environ: dict[str, str]) -> str:
    """The ConfigurationError that building the settings from ``environ`` raises."""
    kind, value = in_child(environ, "load")
    assert kind == "error", f"settings were built: {value!r}"
    return str(value)

"""``make bench``: every benchmark, each figure beside a baseline measured in the same run.

These machines are noisy, so only the ratios mean much; no test depends on a timing.
Benchmarks that need Kafka and Redis get a private pair started here (the same launcher
as the tests), or the ones named by KAFKA_BOOTSTRAP_SERVERS and REDIS_URL.

    python tests/bench/run.py [--quick]     # --quick: smaller sizes (for a smoke run)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.bench import (  # noqa: E402
    bench_cover,
    bench_fanout,
    bench_index,
    bench_live,
    bench_replay,
)
from tests.bench.common import print_report  # noqa: E402
from tests.support.services import external_services, load_localstack  # noqa: E402


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    print("== area to H3 cover (issue 3)")
    bench_cover.run(print_report)
    print("== offline replay (issue 5)")
    bench_replay.run(print_report, full=not quick)
    print("== presence fan-out (issue 4)")
    services = external_services()
    stack = None
    if services is None:
        localstack = load_localstack()
        stack = localstack.LocalStack(Path(tempfile.mkdtemp(prefix="alertfeed-bench-")))
        state = stack.start()
        bootstrap, redis_url = state.bootstrap_servers, state.redis_url
    else:
        bootstrap, redis_url = services.bootstrap_servers, services.redis_url
    try:
        bench_fanout.run(print_report, bootstrap, redis_url, users=100_000 if quick else 1_000_000)
        print("== index lookups: the Redis index against the worker's replica (issue 12)")
        bench_index.run(print_report, redis_url, locations=20_000 if quick else 100_000)
        print("== live worker: the location join (librdkafka batches) against a naive join")
        bench_live.run(print_report, bootstrap, redis_url, users=20_000 if quick else 200_000)
    finally:
        if stack is not None:
            stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

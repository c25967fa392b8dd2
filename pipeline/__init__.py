"""alertfeed: emergency alerts into social feeds.

Which room holds what (the folder of any piece follows from its purpose):

    domain/          the pure core: imports no faust, kafka, redis or prometheus
      alerts/        alert messages in: CAP, NWS GeoJSON, alert JSON, their detection
      geo/           areas to H3: geometry, the cover, SAME/FIPS geocodes, the cover key
      targeting/     who gets a card: locations, matching, presence, cards, policy,
                     dead letters
      lifecycle.py   the alert state machine (issued, updated, cancelled, expired)
      models.py ports.py checks.py reach.py records.py
    service/         the application service (WorkerRuntime) that the Faust worker and
                     the offline replay both drive: retries, isolation, fan-out
    adapters/        the outside world, by technology: faust/, kafka/, redis/, memory/
                     (the in-process twins), census, the disk cover cache, metrics, the
                     preparation process
    replay/          event logs: the format, ordering, recording, live and offline
                     replay, retiming, simulated scenarios
    entrypoints/     the ``alertfeed`` CLI and the worker: parse arguments, build the one
                     Settings object, wire the rooms together
    settings.py      the one settings object; errors.py the one error root

Imports go one way: entrypoints → replay, service, adapters → domain, and everything may
import ``settings`` and ``errors``. The domain imports only itself (tests/test_architecture.py
fails otherwise); adapters implement the domain's ports (``domain/ports.py``).
"""

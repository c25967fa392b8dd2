"""Builds the domain services and their adapters from the one Settings object."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from pipeline.adapters.census import CensusGazetteer
from pipeline.adapters.disk_cover_cache import DiskCoverCache
from pipeline.adapters.metrics import Metrics
from pipeline.adapters.redis.client import RedisClient, redis_client
from pipeline.adapters.redis.dedup import RedisDedupStore
from pipeline.adapters.redis.index import RedisCellIndex
from pipeline.adapters.redis.presence import RedisPresenceStore
from pipeline.adapters.redis.replica import ReplicatedCellIndex
from pipeline.domain.geo.areas import cover_alert
from pipeline.domain.geo.cover import CoverLimits
from pipeline.domain.geo.geocodes import resolve_geocodes_with_reasons
from pipeline.domain.lifecycle import AlertIngest, PreparedAlert, prepare_alerts
from pipeline.domain.models import AlertCover
from pipeline.domain.ports import CellIndex, DedupStore, PresenceStore, Sink
from pipeline.domain.records import RawEvent
from pipeline.domain.targeting.matching import Matcher
from pipeline.domain.targeting.policy import AudiencePolicy
from pipeline.service.reach import ReachTracker
from pipeline.service.runtime import Prepare, WorkerRuntime, at_once, now_ms
from pipeline.settings import Settings


def make_redis(settings: Settings) -> RedisClient:
    r = settings.redis
    return redis_client(
        r.url,
        password=r.resolved_password(),
        socket_timeout_s=r.socket_timeout_s,
        cluster=r.cluster,
    )


def make_redis_stores(
    settings: Settings, client: RedisClient
) -> tuple[ReplicatedCellIndex, RedisDedupStore, RedisPresenceStore]:
    """The cell index, the dedup store and the presence store on ``client``. The index
    answers lookups from an in-process replica of the Redis index (one round trip per
    batch); its writes and point reads go to Redis."""
    prefix = settings.redis.key_prefix
    source = RedisCellIndex(client, prefix=prefix, resolution=settings.match.resolution)
    return (
        ReplicatedCellIndex(source, recheck_s=settings.match.index_recheck_s),
        RedisDedupStore(client, prefix=prefix),
        RedisPresenceStore(
            client,
            prefix=prefix,
            window_ms=freshness_ms(settings),
            known_users=settings.match.presence_known_users,
        ),
    )


def make_runtime(
    settings: Settings,
    services: tuple[Matcher, AlertIngest],
    metrics: Metrics,
    sink: Sink,
    *,
    clock_ms: Callable[[], int] = now_ms,
    reach: ReachTracker | None = None,
    alert_log: Callable[[], list[RawEvent]] | None = None,
    prepare: Prepare | None = None,
    fan_out_inline: bool = True,
) -> WorkerRuntime:
    """The application service as the worker and the offline replay both run it, paced
    by the settings (retry backoff, fan-out holds and retries). The worker runs the
    fan-outs on a task of their own (``fan_out_inline=False``); the offline replay has
    each alert's fan-out done before the next event."""
    matcher, ingest = services
    m = settings.match
    return WorkerRuntime(
        matcher,
        ingest,
        metrics,
        sink,
        clock_ms=clock_ms,
        reach=reach,
        alert_log=alert_log,
        prepare=prepare,
        max_backoff_s=m.retry_max_backoff_s,
        fanout_hold_chunks=m.fanout_hold_chunks,
        fanout_retry_s=m.fanout_retry_s,
        fanout_recheck_s=m.index_recheck_s,
        fan_out_inline=fan_out_inline,
    )


def make_policy(settings: Settings) -> AudiencePolicy:
    return AudiencePolicy.of(settings.policy.allowed_senders, settings.policy.test_users)


def cover_limits(settings: Settings) -> CoverLimits:
    m = settings.match
    return CoverLimits(max_vertices=m.max_vertices, max_shapes=m.max_shapes, max_cells=m.max_cells)


def make_cover_cache(settings: Settings) -> DiskCoverCache | None:
    m = settings.match
    if m.cover_cache_mb == 0:
        return None
    return DiskCoverCache(m.cover_cache_dir, max_bytes=m.cover_cache_mb * 1024 * 1024)


def make_coverer(settings: Settings, resolution: int | None = None) -> partial[AlertCover]:
    """``cover(alert) -> AlertCover`` with the census gazetteer, the configured limits and
    the cover cache."""
    gazetteer = CensusGazetteer()
    return partial(
        cover_alert,
        resolution=settings.match.resolution if resolution is None else resolution,
        limits=cover_limits(settings),
        resolve_geocodes=partial(resolve_geocodes_with_reasons, gazetteer=gazetteer),
        cache=make_cover_cache(settings),
    )


def make_preparer(settings: Settings) -> partial[list[PreparedAlert]]:
    """``prepare(data) -> [PreparedAlert]`` as the worker's preparation process runs it (a
    top-level function of the settings, so that a spawned child can build it)."""
    return partial(prepare_alerts, policy=make_policy(settings), cover=make_coverer(settings))


def make_services(
    settings: Settings,
    index: CellIndex,
    dedup: DedupStore,
    presence: PresenceStore,
    clock_ms: Callable[[], int],
) -> tuple[Matcher, AlertIngest]:
    """The two domain services, as the worker and the offline replay both run them."""
    policy = make_policy(settings)
    matcher = Matcher(
        index,
        dedup,
        policy,
        presence=presence,
        resolution=settings.match.resolution,
        max_future_skew_ms=int(settings.match.max_future_skew_s * 1000),
        freshness_ms=freshness_ms(settings),
        clock_ms=clock_ms,
        concurrently=at_once,
        fanout_chunk=settings.match.fanout_chunk,
    )
    return matcher, AlertIngest(index, policy, make_coverer(settings), clock_ms)


def freshness_ms(settings: Settings) -> int:
    return int(settings.match.freshness_s * 1000)

"""Redis clients for a single server or a Redis Cluster (``REDIS_CLUSTER=true``).

Every key shares one hash tag, so on a cluster the whole queue lives in one slot: the cluster
clients route each script and pipeline to the node that owns it, and follow failovers.
"""
from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster


def sync_client(url: str, cluster: bool, **options: Any):
    return RedisCluster.from_url(url, **options) if cluster else redis.Redis.from_url(url, **options)


def async_client(url: str, cluster: bool, **options: Any):
    return AsyncRedisCluster.from_url(url, **options) if cluster else aioredis.Redis.from_url(url, **options)

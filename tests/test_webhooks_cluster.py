"""Webhooks on a real local Redis Cluster (3 masters, no replicas), six queue shards: the deliveries
of every shard are recorded by the ack script, leased, sent, dead-lettered and listed."""
from __future__ import annotations

import json

import pytest

from scripts.lib.webhook_receiver import Receiver
from test_reshard import cluster, settings_kw  # noqa: F401  (3 masters, QUEUE_SHARDS=6)
from test_webhooks import HOOKS, upload, wait_dead

pytestmark = pytest.mark.slow


def test_deliveries_of_every_shard_on_the_cluster(make_client, run_burst):
    client = make_client(**HOOKS, webhook_max_attempts=2)
    with Receiver() as receiver:
        receiver.answers = {"/down": [503]}
        ok = [upload(client, f"c{i}", receiver.url("/ok")) for i in range(12)]
        down = upload(client, "down", receiver.url("/down"))
        assert len({j.rsplit("-", 1)[1] for j in ok}) >= 3
        run_burst()
        got = receiver.wait_for("/ok", 12)
        assert sorted(json.loads(g.body)["job_id"] for g in got) == sorted(ok)
        [dead] = wait_dead(client, 1)
        assert (dead["job_id"], dead["attempts"], dead["last_status"]) == (down, 2, 503)
        assert client.post(f"/api/v1/webhooks/failed/{dead['delivery_id']}/retry").status_code == 202
        receiver.wait_for("/down", 3)

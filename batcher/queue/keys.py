"""Every Redis key clipq uses, in one place.

All keys share one hash tag (``{clipq}`` by default) so that every multi-key Lua script
also runs on Redis Cluster: the whole queue lives in one slot.
"""
from __future__ import annotations

from dataclasses import dataclass

DEFAULT_NAMESPACE = "clipq"


@dataclass(frozen=True)
class Keys:
    namespace: str = DEFAULT_NAMESPACE

    @property
    def tag(self) -> str:
        return "{" + self.namespace + "}"

    # -- the job queue ---------------------------------------------------------------
    @property
    def queue(self) -> str:
        """The pending list: the API LPUSHes job ids, workers move them from the right."""
        return f"{self.tag}:queue"

    @property
    def delayed(self) -> str:
        """Sorted set of job ids waiting for a retry, scored by due time in ms (Redis time)."""
        return f"{self.tag}:delayed"

    @property
    def failed(self) -> str:
        """Sorted set of finally failed job ids, scored by failure time in ms."""
        return f"{self.tag}:failed"

    @property
    def failed_images(self) -> str:
        """Sorted set of failed job ids whose image is still kept (for a manual retry), scored by
        failure time in ms: dropped oldest first, after FAILED_IMAGE_TTL or sooner when uploads
        need the room (the byte budget, ``lua/prelude.lua``)."""
        return f"{self.tag}:failed_images"

    @property
    def image_bytes(self) -> str:
        """Bytes of every image key that exists (queued, processing, delayed, failed): the
        counter of the byte budget (MAX_QUEUE_BYTES), changed only inside Lua scripts."""
        return f"{self.tag}:image_bytes"

    @property
    def stats(self) -> str:
        """Hash of counters by status plus ``total``; changed only inside Lua scripts."""
        return f"{self.tag}:stats"

    @property
    def workers(self) -> str:
        """Set of worker ids that may own a processing list (the reaper's work list)."""
        return f"{self.tag}:workers"

    @property
    def history(self) -> str:
        """List of queue samples (JSON, newest first) for the dashboard's sparklines; bounded
        in length, with a TTL, written by the workers' heartbeats (``lua/sample.lua``)."""
        return f"{self.tag}:history"

    @property
    def finished(self) -> str:
        """Pub/sub channel: a worker publishes the ids (space-separated) whose outcome it has
        just recorded, so status long-polls (``?wait=``) answer at once."""
        return f"{self.tag}:finished"

    # -- versions: the last upload of a product wins, a delete sticks -----------------
    @property
    def version_seq(self) -> str:
        """The last version given, to an upload or a delete of any product (only grows)."""
        return f"{self.tag}:version"

    @property
    def versions(self) -> str:
        """Hash: product id -> its newest version (its last upload or delete); never expires."""
        return f"{self.tag}:versions"

    @property
    def deletes(self) -> str:
        """Hash: product id -> the version of its last delete (a tombstone); never expires."""
        return f"{self.tag}:deletes"

    def job(self, job_id: str) -> str:
        return f"{self.tag}:job:{job_id}"

    def image(self, job_id: str) -> str:
        return f"{self.tag}:image:{job_id}"

    def processing(self, worker_id: str) -> str:
        return f"{self.tag}:processing:{worker_id}"

    def heartbeat(self, worker_id: str) -> str:
        """The worker's status (JSON, see ``batcher/status.py``) with a TTL: alive while it exists."""
        return f"{self.tag}:heartbeat:{worker_id}"

    # -- the query lane (search, product get/delete) --------------------------------
    @property
    def requests(self) -> str:
        """List of query requests (JSON) that workers answer ahead of bulk indexing."""
        return f"{self.tag}:requests"

    def reply(self, request_id: str) -> str:
        return f"{self.tag}:reply:{request_id}"

    def wake(self, worker_id: str) -> str:
        """Pushed to by a worker stopping itself, so its query lane stops waiting at once."""
        return f"{self.tag}:wake:{worker_id}"

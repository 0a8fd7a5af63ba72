"""The chaos harness: kill workers and Redis while photos are uploaded; prove no job is lost.

tests/test_chaos.py runs the short run as pytest tests (marked slow); ``python -m scripts.chaos``
runs it from the command line with every flag (below). The modules: plan.py (what is uploaded
when, the counters), services.py (the processes, on the one supervisor of scripts/lib/procs.py),
uploads.py (uploads and version races), events.py (the kills), checks.py, loss.py (which losses
a Redis SIGKILL may explain), run.py (one run, its summary line, the command line).

Starts, on loopback only and in a temporary folder:

* a Redis-compatible server with an append-only file (``LocalRedis(dir, aof=True)``, with
  ``--appendfsync everysec`` (default) or ``always``),
* the API (``uvicorn api.main:app``) on a free port,
* one worker at a time (``python -m batcher``) with embedded Qdrant in one folder. Embedded
  Qdrant lets one process open a folder, so a worker is always dead (SIGKILL, then waited
  for: the kernel releases its file lock) before the next one opens the store. To keep the
  gap short, the next worker is started ahead as a *warm spare*: a process that has already
  imported torch/open_clip/qdrant_client and waits for a ``go`` line on stdin before calling
  ``batcher.__main__.main`` with its own, new ``--worker-id``. If the store is still locked
  the worker exits 2 with a clear message (``batcher/store/edge_folder.py``), and is started again.

Then it uploads ``--uploads`` real photos (the ``index`` rows of manifest.tsv in
tests/data/corpus/, else in ../shared/corpus/, cycled) with ``--concurrency`` concurrent httpx
clients; about a fifth of the uploads re-index a product id already used. The uploads come in
portions, one at the start and one at each chaos event below, in bursts of ``--concurrency``,
so that every worker gets fresh work and holds claimed jobs when it is killed. Uploaders retry
503s, 429s and connection errors; only uploads answered 202 count as accepted jobs. The chaos
events, in order:

* SIGKILL the worker (after it has run a few seconds and holds claimed jobs), and start a
  new one under a NEW worker id: the dead worker's processing list comes back only through
  the new worker's reaper, once the dead heartbeat expires (WORKER_HEARTBEAT_TTL=2s);
* kill Redis once (SIGKILL) and restart it on the same AOF folder and port. A SIGKILL loses
  what Redis had not yet written to its AOF: with ``appendfsync always`` nothing it answered;
  with ``everysec`` the writes of up to 2 s while a slow background fsync postpones the
  write (see tests/chaos/loss.py). ``--redis-kill friendly`` (default) kills at a moment
  chosen here: uploads are paused, in-flight uploads finish, 1.5 s pass, ``WAITAOF 1 0`` waits
  until the local AOF is fsynced, and only then SIGKILL. ``--redis-kill unfriendly`` kills at a
  seeded random moment while uploads flow: its portion of uploads (three times the others) is
  released and Redis is SIGKILLed once a random quarter to half of it has been answered 202,
  with no pause and no WAITAOF. The worker is not paused. Uploads go on while Redis is down
  (the API must answer 503, which the uploaders retry); the running worker must ride out the
  outage;
* SIGTERM a worker while it holds claimed jobs: it must exit 0 within its grace period,
  with its processing list empty (unstarted jobs returned) and its heartbeat gone.

Version races (``--races`` at each portion's release, on products of their own, amid the
kills): an undecodable photo fails and its manual retry races a good re-upload of the product
(202, then it fails again or ends superseded, or 409 ``superseded``); a DELETE races the job of
the product's only upload, still queued or in progress (it must answer 200 and the product
must stay deleted); a DELETE and a re-upload are sent at once after an upload (the newer
version wins). The API gives every upload and delete its version; the checks below compare
each product's point with its newest event.

Amid the events, queries the API would refuse (a float filter, odd keys, a limit that is no
number, not JSON) are pushed straight onto the query lane; once the uploads are done they are
pushed again, and the last worker must answer every one (an error reply counts) and then a
plain search through the API (``hostile_answered`` in the summary).

Finally a last worker drains everything and is stopped with SIGTERM; then the checks:

* every accepted job is ``completed`` or ``superseded`` (GET /api/v1/queue/status/<id>); the
  undecodable photos of the races may also be ``failed``. An accepted job whose record is
  gone or in no such state is ``lost``; ``lost_at_redis_kill`` counts those answered 202
  in the Redis kill window (2.5 s before the kill until the restart; ``at_risk`` counts all
  202s of that window). A loss fails the run, except, after an unfriendly kill with everysec,
  a loss within the window: that one is measured and reported;
* the queue, the delayed set and every processing list are empty, the failed set holds the
  failed undecodable photos only; no worker is left registered and no other image key is left;
  the byte budget counts exactly the bytes of the failed photos' images, kept for a retry;
* the counters (GET /api/v1/queue/stats, and the raw stats hash) equal the job records
  found by scanning the job hashes;
* the embedded Qdrant folder, opened after the last worker exited, holds exactly one point
  per product id with a job record, at ``point_id(product_id)`` (``missing_points`` counts
  those without one). A product whose every accepted job was lost may still have the point a
  worker wrote before Redis forgot the job (``points_of_lost``); any other point fails;
* last upload wins, a delete sticks: each product's point holds the version, image sha256 and
  job id of its newest accepted upload, whose job is ``completed``; a product whose newest
  event is a DELETE has no point (``deleted``); ``stale_points`` counts the products that
  differ. A ``superseded`` job is never its product's newest upload.

The API's Redis clients retry a call once after a connection error (a pooled connection
opened before the Redis restart fails once). The status reads of the final check retry a 503
too, and count it as ``late_503``: a 503 to a status read long after the restart.

A job record that no 202 answered (an upload whose answer was lost to a time-out and was
then retried) is reported as ``extra``: allowed, but it must be completed too and its
product counts. MAX_ATTEMPTS is raised to 20 for this run: the deliberate kill rate is far
above a real one, and a job reaped from several killed workers must not fail as a poison pill.

Prints ONE summary line on stdout, e.g.
``chaos: accepted=340 completed=310 superseded=25 ... stale_points=0 OK``; progress goes to stderr.
Exit status 0 only when every check passed; 1 on a loss not allowed above, a duplicate, a
mismatch or a time-out.

  .venv/bin/python -m scripts.chaos            # 300 uploads, 5 worker kills
  .venv/bin/python -m scripts.chaos --short    # 60 uploads, 2 kills: what tests/test_chaos.py runs
  .venv/bin/python -m scripts.chaos --redis-kill unfriendly --appendfsync always
"""

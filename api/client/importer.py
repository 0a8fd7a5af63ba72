"""``clipq-import CATALOG --api URL``: send a product catalog through the HTTP API.

Uploads go through the public API with at most ``--concurrency`` in flight. A 429 waits its
``Retry-After``; a 503, a 5xx or a lost connection backs off and tries again for up to
``--retry-for`` seconds; any other 4xx fails the row with the API's own reason. ``--state
FILE`` records each accepted row (and, with ``--wait``, each finished job), so a second run
sends only what is left. ``--wait`` follows the jobs to the end. ``--failures FILE`` lists every
row that failed with its reason (CSV, or JSON Lines for a ``.jsonl`` name). The exit status is
1 when any row failed, 2 on a usage error.
"""
from __future__ import annotations

import argparse
import asyncio
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
from tqdm import tqdm

from api.client.catalog import Item, Problem, load_catalog
from api.client.state import StateFile, write_failures

UPLOAD = "/api/v1/index-product-with-image"
TERMINAL = {"completed", "failed"}


@dataclass
class Outcome:
    item: Item
    status: str  # accepted | completed | failed
    job_id: str | None = None
    reason: str = ""


class Uploader:
    def __init__(self, client: httpx.AsyncClient, args: argparse.Namespace, bar: tqdm) -> None:
        self.client, self.args, self.bar = client, args, bar
        self.slots = asyncio.Semaphore(args.concurrency)

    async def send(self, item: Item) -> Outcome:
        async with self.slots:
            try:
                return await self._send(item)
            finally:
                self.bar.update()

    async def _send(self, item: Item) -> Outcome:
        loop = asyncio.get_running_loop()
        give_up, delay = loop.time() + self.args.retry_for, 0.5
        while True:
            try:
                resp = await self._post(item)
            except httpx.TransportError as exc:
                resp, why = None, f"the API cannot be reached ({exc.__class__.__name__})"
            if resp is not None and resp.status_code == 202:
                return Outcome(item, "accepted", resp.json()["job_id"])
            if resp is not None:
                why = error_reason(resp)
                if resp.status_code < 500 and resp.status_code != 429:
                    return Outcome(item, "failed", reason=why)
            wait = retry_after(resp) or delay * random.uniform(0.5, 1.0)
            if loop.time() + wait > give_up:
                return Outcome(item, "failed", reason=f"gave up after {self.args.retry_for:.0f}s: {why}")
            await asyncio.sleep(wait)
            delay = min(delay * 2, 30.0)

    async def _post(self, item: Item) -> httpx.Response:
        files = [("image_file", (path.name, path.read_bytes(), "application/octet-stream"))
                 for path in item.image_paths]  # one part per photo
        return await self.client.post(UPLOAD, data=item.form, files=files or None)

    async def follow(self, outcome: Outcome) -> Outcome:
        """Wait until the job is completed or failed (long-polls where the API supports it)."""
        async with self.slots:
            while True:
                try:
                    resp = await self.client.get(f"/api/v1/queue/status/{outcome.job_id}", params={"wait": 20},
                                                 timeout=40)
                except httpx.TransportError:
                    resp = None
                if resp is not None and resp.status_code == 200 and resp.json()["status"] in TERMINAL:
                    body = resp.json()
                    self.bar.update()
                    return Outcome(outcome.item, body["status"], outcome.job_id, body.get("error_message") or "")
                if resp is not None and resp.status_code == 404:
                    self.bar.update()
                    return Outcome(outcome.item, "failed", outcome.job_id, "the job is gone (expired?)")
                await asyncio.sleep(self.args.poll)


def error_reason(resp: httpx.Response) -> str:
    try:
        error = resp.json()["error"]
        return f"{resp.status_code} {error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        return f"{resp.status_code}: {resp.text[:200]}"


def retry_after(resp: httpx.Response | None) -> float | None:
    try:
        return float(resp.headers["Retry-After"]) if resp is not None else None
    except (KeyError, ValueError):
        return None


async def run(args: argparse.Namespace, todo: list[Item], waiting: list[Outcome]) -> list[Outcome]:
    headers = {"X-API-Key": args.api_key} if args.api_key else {}
    limits = httpx.Limits(max_connections=args.concurrency)
    state = StateFile(args.state) if args.state else None
    async with httpx.AsyncClient(base_url=args.api, headers=headers, timeout=60, limits=limits) as client:
        with tqdm(total=len(todo), unit="row", desc="upload", disable=args.no_progress) as bar:
            uploader = Uploader(client, args, bar)  # one semaphore: at most --concurrency in flight
            sent = await asyncio.gather(*(uploader.send(i) for i in todo))
        record(state, sent)
        if not args.wait:
            return sent
        follow = [o for o in sent if o.status == "accepted"] + waiting
        with tqdm(total=len(follow), unit="job", desc="index", disable=args.no_progress) as bar:
            uploader = Uploader(client, args, bar)
            done = await asyncio.gather(*(uploader.follow(o) for o in follow))
        record(state, done)
        return [o for o in sent if o.status == "failed"] + done


def record(state: StateFile | None, outcomes: list[Outcome]) -> None:
    if state is not None:
        for o in outcomes:
            state.record(o.item.key, o.status, o.job_id, o.item.product_id)


def plan(args: argparse.Namespace, items: list[Item]) -> tuple[list[Item], list[Outcome], int]:
    """Rows to send, jobs to follow (accepted by an earlier run), rows finished already."""
    done = StateFile(args.state).load() if args.state else {}
    todo, waiting, skipped = [], [], 0
    for item in items:
        status, job_id = done.get(item.key, (None, None))
        if status == "completed" or (status == "accepted" and not args.wait):
            skipped += 1
        elif status == "accepted":
            waiting.append(Outcome(item, "accepted", job_id))
        else:
            todo.append(item)
    return todo, waiting, skipped


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="clipq-import", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("catalog", type=Path, help="CSV or JSON Lines (.jsonl) file")
    p.add_argument("--api", required=True, help="the API's base URL, e.g. http://127.0.0.1:8000")
    p.add_argument("--api-key", help="sent as X-API-Key")
    p.add_argument("--concurrency", type=int, default=8, help="uploads in flight (default 8)")
    p.add_argument("--wait", action="store_true", help="follow the jobs until each is completed or failed")
    p.add_argument("--state", type=Path, help="resume file: rows already accepted or finished are not sent again")
    p.add_argument("--failures", type=Path, help="write each failed row with its reason here")
    p.add_argument("--retry-for", type=float, default=300, help="seconds to keep retrying 429/503/5xx (default 300)")
    p.add_argument("--poll", type=float, default=1.0, help=argparse.SUPPRESS)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if not args.catalog.is_file():
        p.error(f"{args.catalog}: no such file")
    if args.concurrency < 1:
        p.error("--concurrency must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    catalog = load_catalog(args.catalog)
    todo, waiting, skipped = plan(args, catalog.items)
    outcomes = asyncio.run(run(args, todo, waiting))
    failed = [Problem(o.item.line, o.item.product_id, o.reason) for o in outcomes if o.status == "failed"]
    failed = sorted(catalog.problems + failed, key=lambda p: p.line)
    if args.failures:
        write_failures(args.failures, failed)
    accepted = sum(o.status in ("accepted", "completed") for o in outcomes)
    print(f"clipq-import: rows={len(catalog.items) + len(catalog.problems)} sent={len(todo)} "
          f"skipped={skipped} ok={accepted} failed={len(failed)}"
          + (" (completed)" if args.wait else " (accepted; --wait follows them)"), file=sys.stderr)
    for problem in failed[:10]:
        print(f"  line {problem.line} {problem.product_id or '-'}: {problem.reason}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""One chaos run: ``run_chaos(args)`` starts everything in a temporary folder, runs the plan
with its events, drains, checks and stops every process it started; ``main`` is the command
line of ``python -m scripts.chaos`` (one summary line on stdout; see tests/chaos/__init__.py)."""
from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import sys
import tempfile
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from . import __doc__ as DESCRIPTION
from .checks import Checks
from .events import Events
from .plan import Upload, elapsed, log, plan_events, plan_uploads, portion_starts, restart_clock, tail
from .services import Services
from .uploads import Uploads


class Chaos(Checks, Events, Uploads, Services):
    """A whole run: the processes and state (Services), the uploads and version races, the
    chaos events and the final checks."""

    async def run(self, plan: list[Upload]) -> dict:
        import httpx

        self.start_services()
        self.r = self.new_redis_client()
        self.spare = self.new_spare()
        async with httpx.AsyncClient(timeout=2, trust_env=False) as client:
            async def api_up() -> bool:
                try:
                    return (await client.get(f"{self.api_url}/readyz")).status_code == 200
                except httpx.HTTPError:
                    return False

            if not await self.until_async(api_up, 60, lambda: self.api_proc.poll() is not None, 0.2):
                raise RuntimeError(f"the API did not start:\n{tail(self.dir / 'api.log')}")
        log(f"API on {self.api_url}")
        events = plan_events(self.args.worker_kills)
        log("events: " + " ".join(events))
        self.gate.set()
        self.released = [asyncio.Event() for _ in range(len(events) + 1)]
        # an unfriendly Redis kill happens amid its portion: a bigger one keeps uploads flowing
        unfriendly, self.planned = self.args.redis_kill == "unfriendly", len(plan)
        self.first = portion_starts(len(plan), [1] + [3 if e == "redis" and unfriendly else 1 for e in events])
        self.release(0)  # a backlog for the first worker
        uploads = asyncio.create_task(self.upload_all(plan))
        races = asyncio.create_task(self.version_races())
        await self.start_worker(prewarm_next=True)
        for i, event in enumerate(events, 1):
            if i == 2:  # amid the kills: queries the API would refuse, straight onto the lane
                self.bg.append(asyncio.create_task(self.hostile_searches(final=False)))
            if event == "kill":
                await self.event_kill(i, last=i == len(events))
            elif event == "redis":
                await self.event_redis(i)
            else:
                await self.event_sigterm(i)
        await uploads
        await races
        await self.hostile_searches(final=True)  # the last worker's lane must still answer
        await self.drain()
        return await self.check()


def cleanup(chaos: Chaos | None) -> None:
    """SIGKILL every process the run started, Redis last."""
    if chaos is not None:
        chaos.sup.stop_all(kill=True)
        chaos.redis_server.stop(kill=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m scripts.chaos", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--short", action="store_true",
                   help="quick run for the test suite: 60 uploads, 2 worker kills (flags still override)")
    p.add_argument("--uploads", type=int, help="photos to upload (default 300; --short 60)")
    p.add_argument("--concurrency", type=int, help="concurrent upload clients (default 32; --short 16)")
    p.add_argument("--kill-every", type=float, help="seconds a worker runs before it is killed (default 3; --short 2)")
    p.add_argument("--worker-kills", type=int, help="worker SIGKILLs (default 5; --short 2)")
    p.add_argument("--redis-down", type=float, default=2.0, help="seconds Redis stays down")
    p.add_argument("--redis-kill", choices=("friendly", "unfriendly"), default="friendly",
                   help="friendly: pause uploads and wait for the AOF before the SIGKILL; unfriendly: "
                        "SIGKILL at a seeded random moment while uploads flow")
    p.add_argument("--appendfsync", choices=("everysec", "always"), default="everysec",
                   help="the Redis AOF fsync policy")
    p.add_argument("--reindex", type=float, default=0.2, help="fraction of uploads re-indexing a used product id")
    p.add_argument("--races", type=int, help="version races started with each portion of uploads: a retry "
                   "racing a re-upload, a DELETE racing a queued upload, a DELETE racing a re-upload "
                   "(default 3; --short 2)")
    p.add_argument("--batch-size", type=int, default=8, help="worker --max-batch-size")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--timeout", type=float, help="seconds for the whole run (default 420; --short 200)")
    p.add_argument("--upload-deadline", type=float, default=60, help="seconds one upload may keep retrying")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (always kept on failure)")
    a = p.parse_args(argv)
    short = a.short
    a.uploads = a.uploads or (60 if short else 300)
    a.concurrency = a.concurrency or (16 if short else 32)
    a.kill_every = a.kill_every or (2.0 if short else 3.0)
    a.worker_kills = a.worker_kills if a.worker_kills is not None else (2 if short else 5)
    a.timeout = a.timeout or (200 if short else 420)
    a.races = a.races if a.races is not None else (2 if short else 3)
    if a.uploads < 1 or a.concurrency < 1 or a.worker_kills < 0 or a.kill_every <= 0:
        p.error("--uploads, --concurrency and --kill-every must be positive, --worker-kills >= 0")
    return a


@dataclass
class Outcome:
    chaos: Chaos
    directory: Path
    result: dict = field(default_factory=dict)  # what the checks found (empty when the run broke off)
    fields: dict = field(default_factory=dict)  # the summary line's fields

    @property
    def failures(self) -> list[str]:
        return self.chaos.failures

    @property
    def ok(self) -> bool:
        return not self.chaos.failures

    def line(self) -> str:
        line = "chaos: " + " ".join(f"{k}={v}" for k, v in self.fields.items())
        if self.ok:
            return line + " OK"
        return line + (f" FAIL ({len(self.failures)} failures: {self.failures[0].splitlines()[0]}; "
                       f"logs in {self.directory})")


def run_chaos(args: argparse.Namespace, directory: Path | None = None) -> Outcome:
    """Run the chaos plan of ``args`` (``parse_args``); every process it started is stopped on
    return, whatever happened. The folder (logs, AOF, Qdrant) is left for the caller."""
    restart_clock()
    directory = directory or Path(tempfile.mkdtemp(prefix="clipq-chaos-"))
    plan = plan_uploads(args.uploads, args.seed, args.reindex)
    chaos = Chaos(args, directory)
    out = Outcome(chaos, directory)
    try:
        log(f"{args.uploads} uploads ({len({u.product_id for u in plan})} products), concurrency "
            f"{args.concurrency}, {args.worker_kills} worker kills, folder {directory}")

        async def go() -> dict:
            try:
                return await asyncio.wait_for(chaos.run(plan), args.timeout)
            except (TimeoutError, asyncio.TimeoutError):
                try:
                    log(f"state at the time-out: {await asyncio.wait_for(chaos.snapshot(), 5)}")
                except Exception as exc:  # noqa: BLE001
                    log(f"no state at the time-out: {exc!r}")
                raise
            finally:
                for task in chaos.bg:
                    task.cancel()
                if chaos.r is not None:
                    await chaos.r.aclose()

        try:
            out.result = asyncio.run(go())
        except (TimeoutError, asyncio.TimeoutError):
            chaos.fail(f"timeout: the run took over {args.timeout:.0f}s")
        except Exception as exc:  # noqa: BLE001  (any error is a failed run, with its reason)
            if not isinstance(exc, RuntimeError):
                traceback.print_exc()
            chaos.fail(f"{exc.__class__.__name__}: {exc}")
    finally:
        cleanup(chaos)
    out.fields = summary_fields(chaos, args, out.result)
    return out


def summary_fields(chaos: Chaos, args: argparse.Namespace, result: dict) -> dict:
    c = chaos.c
    fields = {"accepted": result.get("accepted", len(c.accepted)), "completed": result.get("completed", "?"),
              "superseded": result.get("superseded", "?"), "doomed": len(c.doomed),
              "extra": result.get("extra", "?"), "products": result.get("products", "?"),
              "points": result.get("points", "?"), "points_of_lost": result.get("points_of_lost", "?"),
              "worker_kills": c.worker_kills, "orphaned": c.orphaned,
              "reap_max_s": f"{max(c.reap_s):.1f}" if c.reap_s else "-", "redis_restarts": c.redis_restarts,
              "api_503": c.api_503, "late_503": c.late_503, "sigterm_held": c.sigterm_held,
              "hostile_answered": f"{c.hostile_answered}/{c.hostile_sent}",
              "sigterm_exit": "?" if c.sigterm_exit is None else c.sigterm_exit,
              "final_exit": "?" if c.final_exit is None else c.final_exit,
              "redis_kill": args.redis_kill, "appendfsync": args.appendfsync,
              "inflight_at_kill": c.inflight_at_kill, "at_risk": result.get("at_risk", "?"),
              "lost": result.get("lost", "?"), "lost_at_redis_kill": result.get("lost_at_redis_kill", "?"),
              "missing_points": result.get("missing_points", "?"), "duplicates": result.get("duplicates", "?"),
              "deleted": result.get("deleted", "?"), "stale_points": result.get("stale_points", "?"),
              **{f"race_{k}": v for k, v in sorted(c.races.items())},
              "elapsed": f"{elapsed():.0f}s"}
    return fields


def main(argv: list[str] | None = None) -> int:
    """Exit status 0 only when every check passed; 1 on a loss not allowed, a duplicate, a
    mismatch or a time-out. The folder is removed after a passing run unless ``--keep``."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally of run_chaos
    out = run_chaos(args)
    print(out.line(), flush=True)
    if out.ok and not args.keep:
        shutil.rmtree(out.directory, ignore_errors=True)
    return 0 if out.ok else 1

"""Run the fake vast.ai server standalone:

    python -m tests.fakes.vast --host 127.0.0.1 --port PORT --api-key KEY

It prints ``listening on http://HOST:PORT`` once the socket is open. Real time drives the timeline.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from aiohttp import web

from .server import FakeVast


async def _serve(args: argparse.Namespace) -> None:
    fake = FakeVast(args.api_key, credit=args.credit, loading_s=args.loading_s, created_s=args.created_s,
                    run_processes=args.run_processes, workdir=args.workdir,
                    image_env=dict(kv.split("=", 1) for kv in args.image_env))
    runner = web.AppRunner(fake.app())
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port)
    await site.start()
    print(f"listening on http://{args.host}:{args.port}", flush=True)
    stopped = asyncio.Event()
    # a terminated server takes its instances' processes with it: they run in sessions of their
    # own, so nothing else would stop them, and a test's trainer would outlive the test
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopped.set)
    try:
        await stopped.wait()
    finally:
        await runner.cleanup()
        fake.state.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description="fake vast.ai API server for tests")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--api-key", required=True)
    ap.add_argument("--credit", type=float, default=100.0)
    ap.add_argument("--created-s", type=float, default=1.0)
    ap.add_argument("--loading-s", type=float, default=5.0)
    ap.add_argument("--run-processes", action="store_true", help="run each instance's onstart as a local process")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--image-env", action="append", default=[], metavar="KEY=VALUE",
                    help="an ENV line of the instance's image (repeatable)")
    args = ap.parse_args()
    try:
        asyncio.run(_serve(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

"""The Backprop app plus `GET /bench/noop` (async) and `GET /bench/noop-sync` (a threadpool route, as the
predict route is): the same middleware, error handlers and settings, so the no-op routes measure the
app's fixed cost per request — the ceiling for the prediction route.

    python -m bench.noop_app --port 8123     # served as `backprop api` serves the real app
"""

from __future__ import annotations

import argparse

from fastapi import FastAPI

from service.main import create_app as create_backprop_app


def create_app() -> FastAPI:
    """`service.main.create_app()` with the two no-op routes added (uvicorn `--factory`)."""
    app = create_backprop_app()

    async def noop() -> dict[str, bool]:
        return {"ok": True}

    def noop_sync() -> dict[str, bool]:
        return {"ok": True}

    app.add_api_route("/bench/noop", noop, methods=["GET"], include_in_schema=False)
    app.add_api_route("/bench/noop-sync", noop_sync, methods=["GET"], include_in_schema=False)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    import uvicorn

    # The same server options as `backprop api` (backprop/server_commands.py run_api), one process.
    uvicorn.run(
        "bench.noop_app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=1,
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()

"""Closed-loop HTTP load: N concurrent clients (each an httpx.AsyncClient with one keep-alive connection)
sending the same request back to back, bounded in count and time; latencies and errors."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np


@dataclass
class LoadResult:
    """What one load run measured: per-request latencies (s), errors, wall seconds."""

    concurrency: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return len(self.latencies) + self.errors

    @property
    def rate(self) -> float:
        """Successful requests per second."""
        return len(self.latencies) / self.seconds if self.seconds > 0 else 0.0

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(np.asarray(self.latencies), q) * 1000) if self.latencies else float("nan")


def pooled(results: list[LoadResult]) -> LoadResult:
    """One result holding every latency and error of `results` (for percentiles over several rounds)."""
    merged = LoadResult(results[0].concurrency, sum(r.seconds for r in results))
    for result in results:
        merged.latencies += result.latencies
        merged.errors += result.errors
        merged.error_samples += result.error_samples[: 5 - len(merged.error_samples)]
    return merged


async def _run(
    base_url: str,
    method: str,
    path: str,
    body: Any,
    concurrency: int,
    seconds: float,
    max_requests: int,
    timeout: float,
) -> LoadResult:
    # One AsyncClient per simulated client, each with a pool of one connection: a single shared pool of
    # 32 connections costs the client ~3x more CPU per request (httpcore scans its pool on every request),
    # which on a 2-CPU machine would make the load generator, not the server, the bottleneck.
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    result = LoadResult(concurrency, 0.0)
    sent = 0
    clients = [
        httpx.AsyncClient(base_url=base_url, limits=limits, timeout=timeout) for _ in range(concurrency)
    ]
    deadline = time.perf_counter() + seconds

    async def one_client(client: httpx.AsyncClient) -> None:
        nonlocal sent
        while sent < max_requests and time.perf_counter() < deadline:
            sent += 1
            began = time.perf_counter()
            try:
                response = await client.request(method, path, json=body)
            except httpx.HTTPError as exc:
                result.errors += 1
                if len(result.error_samples) < 5:
                    result.error_samples.append(f"{type(exc).__name__}: {exc}")
                continue
            elapsed = time.perf_counter() - began
            if response.status_code == 200:
                result.latencies.append(elapsed)
            else:
                result.errors += 1
                if len(result.error_samples) < 5:
                    result.error_samples.append(f"{response.status_code}: {response.text[:200]}")

    try:
        began = time.perf_counter()
        await asyncio.gather(*(one_client(client) for client in clients))
        result.seconds = time.perf_counter() - began
    finally:
        for client in clients:
            await client.aclose()
    return result


def closed_loop(
    base_url: str,
    method: str,
    path: str,
    body: Any = None,
    *,
    concurrency: int,
    seconds: float,
    max_requests: int = 1_000_000,
    timeout: float = 30.0,
) -> LoadResult:
    """`concurrency` clients sending `method path` (JSON `body`) until `seconds` pass or `max_requests`."""
    return asyncio.run(_run(base_url, method, path, body, concurrency, seconds, max_requests, timeout))

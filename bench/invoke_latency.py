"""Benchmark: cold and warm invoke latency of a noop action on standalone Wisp.

Each figure is reported with a baseline measured in the same run, on the same
machine: the runtime process alone (start + /init for cold, one /run for warm), so the
ratio is the platform's overhead factor. Results go to bench/results/latency.json.

    .venv/bin/python bench/invoke_latency.py [--cold 10] [--warm 100] [--burst 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.standalone import StandaloneProcess, basic_auth  # noqa: E402
from wisp.config.model import RuntimeConfig  # noqa: E402
from wisp.infra.runtime.container import ContainerSpec  # noqa: E402
from wisp.infra.runtime.process import ProcessContainerFactory  # noqa: E402

NOOP = "def main(args):\n    return {}\n"
RESULTS = Path(__file__).parent / "results"


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "n": len(samples),
        "p50_ms": round(statistics.median(samples), 2),
        "p95_ms": round(pct(samples, 0.95), 2),
        "mean_ms": round(statistics.fmean(samples), 2),
    }


async def baseline(cold: int, warm: int) -> dict[str, Any]:
    """The runtime alone: container start + /init, and one warm /run."""
    with tempfile.TemporaryDirectory() as work:
        factory = ProcessContainerFactory(RuntimeConfig(), work_dir=Path(work))
        cold_ms: list[float] = []
        warm_ms: list[float] = []
        init = {
            "name": "noop",
            "main": "main",
            "code": NOOP,
            "binary": False,
            "env": {},
        }
        for i in range(cold):
            start = time.perf_counter()
            container = await factory.create_container(
                ContainerSpec(f"noop{i}", "python:3", 256)
            )
            await container.initialize(init, 10.0)
            await container.run({"value": {}}, 10.0, 1_048_576)
            cold_ms.append((time.perf_counter() - start) * 1000)
            if i < cold - 1:
                await container.destroy()
        for _ in range(warm):
            start = time.perf_counter()
            await container.run({"value": {}}, 10.0, 1_048_576)
            warm_ms.append((time.perf_counter() - start) * 1000)
        await factory.cleanup()
    return {"cold": summary(cold_ms), "warm": summary(warm_ms)}


async def platform(url: str, cold: int, warm: int, burst: int) -> dict[str, Any]:
    headers = {"Authorization": basic_auth(), "Content-Type": "application/json"}
    base = url + "/api/v1/namespaces/_/actions/"
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:

        async def create(name: str) -> None:
            body = {"exec": {"kind": "python:3", "code": NOOP}}
            async with session.put(base + name + "?overwrite=true", json=body) as resp:
                assert resp.status == 200, await resp.text()

        async def invoke(name: str) -> tuple[float, dict[str, Any]]:
            start = time.perf_counter()
            async with session.post(base + name + "?blocking=true", json={}) as resp:
                record = await resp.json()
                assert resp.status == 200, record
            return (time.perf_counter() - start) * 1000, record

        cold_ms = []
        for i in range(cold):
            await create(f"cold{i}")
            elapsed, _ = await invoke(f"cold{i}")
            cold_ms.append(elapsed)

        await create("warm")
        await invoke("warm")
        warm_ms = [(await invoke("warm"))[0] for _ in range(warm)]

        await create("burst")
        start = time.perf_counter()
        answers = await asyncio.gather(*(invoke("burst") for _ in range(burst)))
        wall_ms = (time.perf_counter() - start) * 1000
        cold_starts = sum(
            1
            for _, record in answers
            if any(a["key"] == "initTime" for a in record["annotations"])
        )
    return {
        "cold": summary(cold_ms),
        "warm": summary(warm_ms),
        "burst": {
            "invokes": burst,
            "containers_created": cold_starts,
            "wall_ms": round(wall_ms, 1),
            "latency": summary([elapsed for elapsed, _ in answers]),
        },
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cold", type=int, default=10)
    parser.add_argument("--warm", type=int, default=100)
    parser.add_argument("--burst", type=int, default=50)
    args = parser.parse_args()

    base = await baseline(args.cold, args.warm)
    with tempfile.TemporaryDirectory() as data, StandaloneProcess(Path(data)) as server:
        wisp = await platform(server.url, args.cold, args.warm, args.burst)

    report = {
        "baseline_runtime_alone": base,
        "wisp_standalone": wisp,
        "ratio_cold_p50": round(wisp["cold"]["p50_ms"] / base["cold"]["p50_ms"], 2),
        "ratio_warm_p50": round(wisp["warm"]["p50_ms"] / base["warm"]["p50_ms"], 2),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latency.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    asyncio.run(main())

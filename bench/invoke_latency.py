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

from tests.support.standalone import (  # noqa: E402
    StandaloneProcess,
    basic_auth,
    free_port,
)
from wisp.config.model import RuntimeConfig  # noqa: E402
from wisp.infra.runtime.container import ContainerSpec  # noqa: E402
from wisp.infra.runtime.process import ProcessContainerFactory  # noqa: E402

NOOP = "def main(args):\n    return {}\n"
SLOW = "import time\n\ndef main(args):\n    time.sleep(0.2)\n    return {}\n"
RESULTS = Path(__file__).parent / "results"
ACTIONS = "/api/v1/namespaces/_/actions/"


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


async def pool_count(session: aiohttp.ClientSession, admin_url: str) -> int:
    """Containers the invoker holds now (FPCInvokerServer `GET /pool/count`)."""
    auth = aiohttp.encode_basic_auth("invoker.user", "invoker.pass")
    async with session.get(
        admin_url + "/pool/count", headers={"Authorization": auth}
    ) as resp:
        return int(await resp.text())


def api_session() -> aiohttp.ClientSession:
    headers = {"Authorization": basic_auth(), "Content-Type": "application/json"}
    return aiohttp.ClientSession(
        headers=headers, timeout=aiohttp.ClientTimeout(total=120)
    )


async def create(
    session: aiohttp.ClientSession, url: str, name: str, code: str
) -> None:
    body = {"exec": {"kind": "python:3", "code": code}}
    async with session.put(f"{url}{ACTIONS}{name}?overwrite=true", json=body) as resp:
        assert resp.status == 200, await resp.text()


async def invoke(
    session: aiohttp.ClientSession, url: str, name: str
) -> tuple[float, dict[str, Any]]:
    start = time.perf_counter()
    async with session.post(f"{url}{ACTIONS}{name}?blocking=true", json={}) as resp:
        record = await resp.json()
        assert resp.status == 200, record
    return (time.perf_counter() - start) * 1000, record


async def latency(url: str, cold: int, warm: int) -> dict[str, Any]:
    """Cold: a new action each time; warm: one action again and again."""
    async with api_session() as session:
        cold_ms = []
        for i in range(cold):
            await create(session, url, f"cold{i}", NOOP)
            cold_ms.append((await invoke(session, url, f"cold{i}"))[0])

        await create(session, url, "warm", NOOP)
        await invoke(session, url, "warm")
        warm_ms = [(await invoke(session, url, "warm"))[0] for _ in range(warm)]
    return {"cold": summary(cold_ms), "warm": summary(warm_ms)}


async def burst(url: str, admin_url: str, code: str, count: int) -> dict[str, Any]:
    """`count` concurrent blocking invokes of one new action on a fresh server; the
    invoker's pool then holds exactly the containers the burst created."""
    async with api_session() as session:
        await create(session, url, "burst", code)
        start = time.perf_counter()
        answers = await asyncio.gather(
            *(invoke(session, url, "burst") for _ in range(count))
        )
        wall_ms = (time.perf_counter() - start) * 1000
        containers = await pool_count(session, admin_url)
    cold_starts = sum(
        1
        for _, record in answers
        if any(a["key"] == "initTime" for a in record["annotations"])
    )
    return {
        "invokes": count,
        "containers_created": containers,
        "activations_with_cold_start": cold_starts,
        "wall_ms": round(wall_ms, 1),
        "latency": summary([elapsed for elapsed, _ in answers]),
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cold", type=int, default=10)
    parser.add_argument("--warm", type=int, default=100)
    parser.add_argument("--burst", type=int, default=50)
    parser.add_argument(
        "--user-memory-mb", type=int, default=0, help="invoker memory (0 = default)"
    )
    args = parser.parse_args()
    env: dict[str, str] = {}
    if args.user_memory_mb:
        env["WISP__INVOKER__USER_MEMORY_MB"] = str(args.user_memory_mb)

    base = await baseline(args.cold, args.warm)
    wisp: dict[str, Any] = {}
    runs = [("latency", None), ("burst_noop", NOOP), ("burst_sleep_200ms", SLOW)]
    for label, code in runs:
        admin_port = free_port()
        env["WISP__INVOKER__ADMIN_PORT"] = str(admin_port)
        with (
            tempfile.TemporaryDirectory() as data,
            StandaloneProcess(Path(data), env=env) as server,
        ):
            if code is None:
                wisp.update(await latency(server.url, args.cold, args.warm))
            else:
                admin_url = f"http://127.0.0.1:{admin_port}"
                wisp[label] = await burst(server.url, admin_url, code, args.burst)

    report = {
        "invoker_user_memory_mb": args.user_memory_mb or "default (2048)",
        "baseline_runtime_alone": base,
        "wisp_standalone": wisp,
        "ratio_cold_p50": round(wisp["cold"]["p50_ms"] / base["cold"]["p50_ms"], 2),
        "ratio_warm_p50": round(wisp["warm"]["p50_ms"] / base["warm"]["p50_ms"], 2),
    }
    RESULTS.mkdir(exist_ok=True)
    suffix = f"-{args.user_memory_mb}mb" if args.user_memory_mb else ""
    (RESULTS / f"latency{suffix}.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    asyncio.run(main())

"""Provider benchmark: SMS per second and per-send latency through each provider's real library
to the project's compatible endpoint (issue 19) — Twilio (aiohttp, on the loop) and Aliyun (the
official SDK's synchronous path in worker threads, `asyncio.to_thread`).

    .venv/bin/python bench/bench_providers.py [--messages 1000] [--concurrency 50]

Each endpoint runs in a process of its own (as the provider would be elsewhere); the sends go in
waves of `--concurrency`, as one outbox pass gathers its batch. No database: this is the
provider's share of an SMS, not the outbox's.

Measured 2026-12-03 on the 2-core shared machine, load average 8.4-8.7 (other helpers' tests),
1,000 SMS, 50 at once, two runs: Twilio 422 / 618 SMS/s (per send p50 60 / 39 ms, p99 257 /
162 ms); Aliyun 722 / 1,335 SMS/s (p50 21 / 19 ms, p99 201 / 54 ms). The SDK in the default
thread pool (6 threads here) is no bottleneck at an outbox pass's 50 at once; its endpoint
answers a query-string POST with no form to parse, Twilio's a form.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import socket
import statistics
import time

import uvicorn

from dispatcher.aliyun_sandbox import AliyunSandbox, create_aliyun_sandbox_app
from dispatcher.aliyun_sms import AliyunAccount, AliyunSmsProvider
from dispatcher.providers import SmsProvider
from dispatcher.twilio_provider import TwilioSmsProvider
from dispatcher.twilio_sandbox import SmsSandbox, create_sandbox_app

KEY, SECRET, SID, TOKEN = "LTAIbench", "bench-secret", "AC" + "0" * 32, "bench-token"
BODY = "【安心】A27 已改派他人，无需前往。"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(kind: str, port: int) -> None:
    if kind == "aliyun":
        # Aliyun's cap per number and day would refuse a benchmark's worth: lifted here.
        app = create_aliyun_sandbox_app(AliyunSandbox(KEY, SECRET, daily_limit=10**9))
    else:
        app = create_sandbox_app(SmsSandbox(TOKEN, SID, None))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


async def _run(provider: SmsProvider, messages: int, concurrency: int) -> tuple[float, list[float]]:
    latencies: list[float] = []

    async def one(i: int) -> None:
        started = time.perf_counter()
        await provider.send(to=f"+86138{i % 10**8:08d}", body=BODY, status_callback=None)
        latencies.append(time.perf_counter() - started)

    await one(0)  # connections and threads warm
    latencies.clear()
    started = time.perf_counter()
    for wave in range(0, messages, concurrency):
        await asyncio.gather(*(one(i) for i in range(wave, min(messages, wave + concurrency))))
    elapsed = time.perf_counter() - started
    await provider.aclose()
    return messages / elapsed, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.1f} ({os.cpu_count()} cores)")
    for kind in ("twilio", "aliyun"):
        port = _free_port()
        server = mp.Process(target=_serve, args=(kind, port), daemon=True)
        server.start()
        time.sleep(1.5)
        url = f"http://127.0.0.1:{port}"
        provider: SmsProvider
        if kind == "aliyun":
            provider = AliyunSmsProvider(
                account=AliyunAccount(KEY, SECRET, endpoint=url), sign_name="安心"
            )
        else:
            provider = TwilioSmsProvider(
                account_sid=SID, auth_token=TOKEN, from_number="+8610690000000", base_url=url
            )
        rate, latencies = asyncio.run(_run(provider, args.messages, args.concurrency))
        cuts = statistics.quantiles(latencies, n=100)
        print(
            f"{kind:6}: {rate:6.0f} SMS/s, per send p50 {cuts[49] * 1000:.0f} ms, "
            f"p99 {cuts[98] * 1000:.0f} ms ({args.messages} SMS, {args.concurrency} at once)"
        )
        server.terminate()
        server.join()
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

"""Served classification over loopback: a naive server vs ``tuneforge serve``, same run.

Both serve the same bundle. The naive server is FastAPI + one HF ``pipeline`` call per
request (bench/baselines/naive_server.py); tuneforge coalesces concurrent requests into
micro-batches on its chosen backend (``--backend``, default auto: the fastest exported
backend within 1 accuracy point; run ``tuneforge export BUNDLE --int8`` first).

For each server and each concurrency (1, 8, 32 clients), clients send one text per request,
cycling through the texts of ``--data``, for ``--seconds``; we report requests/s, p50/p95/p99
latency and errors (non-200 answers or exceptions). The load generator (``wrk`` when it is
installed, one thread; else asyncio + httpx) runs on the same cores as the server: both
servers pay that cost alike.

Run:
    python bench/serve_throughput.py BUNDLE --data SST2_VALIDATION_CSV \
        --json bench/results/serve_throughput.json
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO_ROOT, env_info, read_csv, write_json

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
LOAD_CLIENT = "httpx"


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError("server did not start")


async def load(url: str, path: str, body, headers, texts, clients: int, seconds: float) -> dict:
    """``clients`` concurrent loops for ``seconds``; latency of every request."""
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(
        base_url=url, headers=headers, limits=limits, timeout=60
    ) as client:

        async def one(worker: int) -> None:
            nonlocal errors
            i = worker
            while time.perf_counter() < stop:
                text = texts[i % len(texts)]
                i += clients
                t = time.perf_counter()
                try:
                    r = await client.post(path, json=body(text))
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - t)
                else:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(one(w) for w in range(clients)))
        elapsed = time.perf_counter() - started
    lat = np.asarray(latencies) * 1000
    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": errors,
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 2) if len(lat) else None,
        "p95_ms": round(float(np.percentile(lat, 95)), 2) if len(lat) else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 2) if len(lat) else None,
    }


WRK_SCRIPT = r"""
local bodies = {}
local i = 0
init = function(args)
  for line in io.lines(args[1]) do bodies[#bodies + 1] = line end
  i = math.random(#bodies)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end
request = function()
  i = i % #bodies + 1
  return wrk.format(nil, nil, nil, bodies[i])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "non2xx": %d, "errors": %d, '
    .. '"p50_us": %d, "p95_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
"""


def wrk_load(url, path, body, headers, texts, clients: int, seconds: float) -> dict:
    """The same measurement with wrk (C, one thread): far less client CPU than httpx."""
    import json as _json

    work = Path(tempfile.mkdtemp(prefix="tf-wrk-"))
    try:
        (work / "load.lua").write_text(WRK_SCRIPT)
        (work / "bodies.jsonl").write_text("".join(_json.dumps(body(t)) + "\n" for t in texts))
        cmd = [
            "wrk",
            "-t",
            "1",
            "-c",
            str(clients),
            "-d",
            f"{max(1, round(seconds))}s",
            "--timeout",
            "60s",
            "-s",
            str(work / "load.lua"),
        ]
        for k, v in headers.items():
            cmd += ["-H", f"{k}: {v}"]
        cmd += [url + path, "--", str(work / "bodies.jsonl")]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        stats = _json.loads(out.strip().splitlines()[-1])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ok = stats["requests"] - stats["non2xx"]
    return {
        "clients": clients,
        "requests": ok,
        "errors": stats["non2xx"] + stats["errors"],
        "requests_per_s": round(ok / (stats["duration_us"] / 1e6), 1),
        "p50_ms": round(stats["p50_us"] / 1000, 2),
        "p95_ms": round(stats["p95_us"] / 1000, 2),
        "p99_ms": round(stats["p99_us"] / 1000, 2),
    }


def run_server(cmd, url, texts, path, body, headers, levels, seconds, info=None) -> list[dict]:
    proc = subprocess.Popen(
        cmd, env=ENV, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        wait_ready(url, proc)
        asyncio.run(load(url, path, body, headers, texts, 4, 3))  # warm-up (loads the model)
        if info is not None:
            info.update(
                httpx.get(url + "/readyz", params={"model": "bench-model"}, headers=headers).json()
            )
            print("tuneforge serves with", info, flush=True)
        out = []
        for clients in levels:
            if LOAD_CLIENT == "wrk":
                result = wrk_load(url, path, body, headers, texts, clients, seconds)
            else:
                result = asyncio.run(load(url, path, body, headers, texts, clients, seconds))
            print(result, flush=True)
            out.append(result)
        return out
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--data", required=True)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--onnx-threads", type=int, default=None)
    parser.add_argument(
        "--load-client",
        choices=["auto", "wrk", "httpx"],
        default="auto",
        help="wrk (C, Debian package) when installed, else asyncio + httpx.",
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    texts, _ = read_csv(args.data)
    global LOAD_CLIENT
    LOAD_CLIENT = args.load_client
    if LOAD_CLIENT == "auto":
        LOAD_CLIENT = "wrk" if shutil.which("wrk") else "httpx"
    print(f"load client: {LOAD_CLIENT}", flush=True)
    bundle = args.bundle.resolve()
    python = sys.executable
    tuneforge = [python, "-m", "tuneforge"]

    naive = run_server(
        [
            python,
            str(REPO_ROOT / "bench" / "baselines" / "naive_server.py"),
            str(bundle),
            "--port",
            "8101",
        ],
        "http://127.0.0.1:8101",
        texts,
        "/classify",
        lambda t: {"input": t},
        {},
        args.clients,
        args.seconds,
    )

    data_dir = Path(tempfile.mkdtemp(prefix="tf-serve-bench-"))
    try:
        subprocess.run(
            [
                *tuneforge,
                "models",
                "import",
                str(bundle),
                "--project",
                "bench",
                "--name",
                "bench-model",
                "--data-dir",
                str(data_dir),
            ],
            env=ENV,
            check=True,
            capture_output=True,
        )
        key = (
            subprocess.run(
                [
                    *tuneforge,
                    "keys",
                    "create",
                    "--project",
                    "bench",
                    "--scopes",
                    "infer",
                    "--data-dir",
                    str(data_dir),
                ],
                env=ENV,
                check=True,
                capture_output=True,
                text=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        ENV["TUNEFORGE_BACKEND"] = args.backend
        if args.onnx_threads:
            ENV["TUNEFORGE_ONNX_THREADS"] = str(args.onnx_threads)
        served: dict = {}
        tuneforge_results = run_server(
            [
                *tuneforge,
                "serve",
                "--port",
                "8102",
                "--data-dir",
                str(data_dir),
                "--workers",
                "0",
                "--rate-limit",
                "0",
                "--log-level",
                "warning",
            ],
            "http://127.0.0.1:8102",
            texts,
            "/v1/classify",
            lambda t: {"model": "bench-model", "input": t},
            {"Authorization": f"Bearer {key}"},
            args.clients,
            args.seconds,
            served,
        )
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    print(
        f"{'clients':>7} {'naive req/s':>12} {'tuneforge req/s':>16} {'ratio':>6} "
        f"{'naive p99':>10} {'tf p99':>8}"
    )
    rows = []
    for n, t in zip(naive, tuneforge_results, strict=True):
        ratio = t["requests_per_s"] / n["requests_per_s"] if n["requests_per_s"] else None
        rows.append({"clients": n["clients"], "naive": n, "tuneforge": t, "ratio": ratio})
        print(
            f"{n['clients']:>7} {n['requests_per_s']:>12.1f} {t['requests_per_s']:>16.1f} "
            f"{ratio or 0:>6.2f} {n['p99_ms']:>10} {t['p99_ms']:>8}"
        )
    if args.json:
        write_json(
            args.json,
            {
                "benchmark": "serve_throughput",
                "command": " ".join(sys.argv),
                "bundle": str(bundle),
                "data": args.data,
                "seconds_per_level": args.seconds,
                "backend": args.backend,
                "onnx_threads": args.onnx_threads,
                "load_client": LOAD_CLIENT,
                "tuneforge_model": served,
                "results": rows,
                "env": env_info(),
            },
        )


if __name__ == "__main__":
    main()

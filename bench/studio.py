"""Face studio latency and throughput: the real server on loopback, 1 and 8 clients.

    python bench/studio.py                                   # a random-weight 64x64 DCGAN (TrainDCGAN's default size)
    python bench/studio.py --model processed/models/celeba/dcgan-<v> --seconds 20
    python bench/studio.py --soak-minutes 10                 # then 10 minutes at 8 clients, server memory sampled
    python bench/studio.py --clients 1 --mixed 2             # then edits beside 2 clients completing back to back

Starts ``python -m studio`` on a free 127.0.0.1 port, drives ``POST /api/generate`` with
a new random z per request from 1 and then 8 concurrent keep-alive clients for
``--seconds`` each, and prints one JSON line: p50/p99 latency, requests/s and errors
per client count (with the mean rows per generator call the server made, and the figures
of the ``--ramp-seconds`` the same clients ran just before, not counted), and the
same generator's raw forward time at batch 1 and 8 (the compiled forward the server
runs, in this process, same engine and precision), so the server's overhead is visible.
Targets (issue 17, 64x64 on the 2-core CPU): p50 <= 25 ms with one client; p99 <=
100 ms and >= 100 requests/s with 8; no errors; in the soak, server memory (RSS) grows
by less than 10%. Generation speed does not depend on the weights, so the
default random-weight generator measures the same as a trained one of that size.

``--mixed K`` adds three phases of ``--seconds`` each (issue 30): ``--mixed-edit-clients``
edit clients alone; K heavy clients alone, each posting ``POST /api/complete`` (a face the
server generated, its center square missing; ``--heavy-method``, default the latent search,
a job of the server's queue) back to back and waiting for each answer; then both together.
The JSON's ``mixed`` holds edit p50/p99 and requests/s, and the heavy completions' p50/p99
latency (queue time included: the studio runs one job at a time on 2 cores), count, 429s and
errors, in each phase, and the ratios together / alone. The server is started with
``--max-jobs`` of at least K, so every heavy client holds one job (the per-client share is one).
Target: no edit waits more than a second while completions run (p99 together <= 1000 ms).
"""
from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model.cpu import cpu_model  # noqa: E402

TARGETS = {"p50_ms_1": 25.0, "p99_ms_8": 100.0, "requests_per_s_8": 100.0, "memory_growth": 0.10,
           "mixed_edit_p99_ms": 1000.0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def random_run(folder: Path) -> Path:
    """A run folder with a random-weight DCGAN generator of TrainDCGAN's default size."""
    from model.card import ModelCard, noise_spec, write_card
    from model.nets.dcgan import build_generator

    build_generator(64, 3, 100, base_width=128, fast=False).save(folder / "generator.keras")
    write_card(folder, ModelCard(variant="dcgan", resolution=64, channels=3, inputs=[noise_spec(100)],
                                 dataset={"name": "random-weights"}))
    return folder


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def raw_forward_ms(run: Path, engine: str, precision: str, batch: int = 1, repeats: int = 200) -> float:
    """Median time of one call of the forward the server uses (same engine, precision), on ``batch`` rows."""
    from model.card import load_generator, sample_inputs
    from model.train.serving import serving_forward

    card, generator = load_generator(run)
    forward = serving_forward(run, card, generator, engine, precision)
    inputs = sample_inputs(card, batch * (repeats + 10), seed=0)
    rows = [{k: v[i * batch:(i + 1) * batch] for k, v in inputs.items()} for i in range(repeats + 10)]
    for chunk in rows[:10]:
        forward(chunk)
    times = []
    for chunk in rows[10:]:
        start = time.perf_counter()
        forward(chunk)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)


def server_stats(port: int) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/api/stats")
    return json.loads(conn.getresponse().read())


def drive(port: int, clients: int, seconds: float, seed: int = 0) -> dict:
    """``clients`` threads, each one keep-alive connection posting generate requests back to back."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    stop = time.monotonic() + seconds

    def client(k: int) -> None:
        rng = np.random.default_rng(seed * 1000 + k)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while time.monotonic() < stop:
            body = json.dumps({"z": rng.uniform(-1, 1, 100).round(5).tolist()})
            start = time.perf_counter()
            try:
                conn.request("POST", "/api/generate", body, {"Content-Type": "application/json"})
                response = conn.getresponse()
                data = response.read()
                ok = response.status == 200 and data[:8] == b"\x89PNG\r\n\x1a\n"
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            if ok:
                latencies[k].append(time.perf_counter() - start)
            else:
                errors[k] += 1
        conn.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - began
    lat = np.array([x for per in latencies for x in per]) * 1000
    return {"clients": clients, "requests": int(lat.size), "errors": int(sum(errors)),
            "p50_ms": round(float(np.percentile(lat, 50)), 2) if lat.size else None,
            "p99_ms": round(float(np.percentile(lat, 99)), 2) if lat.size else None,
            "requests_per_s": round(lat.size / elapsed, 1)}


def _get(port: int, path: str) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path)
    return json.loads(conn.getresponse().read())


def _post(port: int, path: str, body: dict) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    response = conn.getresponse()
    data = response.read()
    if response.status != 200:
        raise SystemExit(f"bench/studio.py: POST {path} answered {response.status}: {data[:300]!r}")
    return json.loads(data)


def wait_warm(port: int, limit_s: float = 300.0) -> str:
    """Until the model's searches are built (``warm`` of /api/model no longer ``warming``)."""
    deadline = time.monotonic() + limit_s
    warm = _get(port, "/api/model")["warm"]
    while warm == "warming" and time.monotonic() < deadline:
        time.sleep(0.5)
        warm = _get(port, "/api/model")["warm"]
    return warm


def completion_body(port: int, method: str) -> dict:
    """A completion request: a face the server generated (seed 0), its center square missing."""
    from PIL import Image

    face = _post(port, "/api/random", {"seed": 0})["image"]
    size = Image.open(io.BytesIO(base64.b64decode(face.split(",", 1)[1]))).size[0]
    mask = np.zeros((size, size, 3), np.uint8)
    mask[size // 4:3 * size // 4, size // 4:3 * size // 4] = 255
    buf = io.BytesIO()
    Image.fromarray(mask).save(buf, format="PNG")
    return {"image": face, "mask": "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode(),
            "method": method}


def heavy(port: int, clients: int, seconds: float, body: dict) -> dict:
    """``clients`` threads, each posting completions back to back (its own X-Client-Id: its own
    share of the job queue) and waiting for each answer, starting new ones for ``seconds``."""
    latencies: list[float] = []
    counts = {"rejected": 0, "errors": 0}
    methods: set[str] = set()
    lock = threading.Lock()
    stop = time.monotonic() + seconds
    data = json.dumps(body)

    def client(k: int) -> None:
        headers = {"Content-Type": "application/json", "X-Client-Id": f"bench-heavy-{k}"}
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        while time.monotonic() < stop:
            start = time.perf_counter()
            try:
                conn.request("POST", "/api/complete", data, headers)
                response = conn.getresponse()
                answer, status = response.read(), response.status
            except (OSError, http.client.HTTPException):
                answer, status = b"", 0
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
            with lock:
                if status == 200:
                    latencies.append(time.perf_counter() - start)
                    methods.add(json.loads(answer)["method"])
                elif status == 429:
                    counts["rejected"] += 1
                else:
                    counts["errors"] += 1
            if status == 429:
                time.sleep(0.5)
        conn.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lat = np.array(latencies) * 1000
    return {"clients": clients, "completions": int(lat.size), **counts, "methods": sorted(methods),
            "p50_ms": round(float(np.percentile(lat, 50)), 1) if lat.size else None,
            "p99_ms": round(float(np.percentile(lat, 99)), 1) if lat.size else None}


def mixed(port: int, edit_clients: int, heavy_clients: int, seconds: float, method: str) -> dict:
    """Edits alone, completions alone, then both at once, ``seconds`` each."""
    body = completion_body(port, method)
    out = {"edit_clients": edit_clients, "heavy_clients": heavy_clients, "heavy_method": method,
           "warm": wait_warm(port)}
    _post(port, "/api/complete", body)  # one completion first: its graphs traced, a network loaded
    out["edits_alone"] = drive(port, edit_clients, seconds, seed=500)
    out["heavy_alone"] = heavy(port, heavy_clients, seconds, body)
    beside: dict = {}
    thread = threading.Thread(target=lambda: beside.update(heavy(port, heavy_clients, seconds, body)))
    thread.start()
    out["together"] = {"edits": drive(port, edit_clients, seconds, seed=501)}
    thread.join()
    out["together"]["heavy"] = beside

    def ratio(a, b):
        return round(a / b, 2) if a is not None and b else None

    edits, alone = out["together"]["edits"], out["edits_alone"]
    out["edit_p50_ratio"] = ratio(edits["p50_ms"], alone["p50_ms"])
    out["edit_p99_ratio"] = ratio(edits["p99_ms"], alone["p99_ms"])
    out["heavy_p50_ratio"] = ratio(beside["p50_ms"], out["heavy_alone"]["p50_ms"])
    return out


def start_server(run: Path, port: int, engine: str, precision: str, extra: tuple = ()) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen([sys.executable, "-m", "studio", "--model", str(run), "--models-root", str(run.parent),
                             "--port", str(port), "--engine", engine, "--precision", precision, *extra],
                            cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"bench/studio.py: the server exited: {proc.stderr.read()[-1500:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/api/health")
            if conn.getresponse().status == 200:
                return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("bench/studio.py: the server did not start within 300 s")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="run folder (default: a random-weight 64x64 DCGAN in a temporary folder)")
    p.add_argument("--seconds", type=float, default=20.0, help="seconds per client count (default: %(default)s)")
    p.add_argument("--clients", default="1,8", help="client counts (default: %(default)s)")
    p.add_argument("--engine", default="auto", choices=("auto", "openvino", "tensorflow"),
                   help="the server's inference engine (facegan-studio --engine; default: %(default)s)")
    p.add_argument("--precision", default="auto", choices=("auto", "float32", "mixed_bfloat16"))
    p.add_argument("--soak-minutes", type=float, default=0.0, help="then this long at 8 clients, sampling the "
                                                                   "server's memory every 10 s (default: off)")
    p.add_argument("--mixed", type=int, default=0, metavar="K",
                   help="then edits alone, K clients completing back to back alone, and both together, "
                        "--seconds each (default: off)")
    p.add_argument("--mixed-edit-clients", type=int, default=1, help="edit clients in --mixed (default: %(default)s)")
    p.add_argument("--heavy-method", default="search", choices=("search", "auto", "net"),
                   help="the heavy clients' completion method (default: %(default)s, a job of the queue)")
    p.add_argument("--batch-wait-ms", type=float, default=None,
                   help="the server's --batch-wait-ms (default: the server's own)")
    p.add_argument("--ramp-seconds", type=float, default=5.0,
                   help="clients run this long at each count before it is measured; the ramp's own figures "
                        "are in the JSON as `ramp` (default: %(default)s)")
    p.add_argument("--max-batch", type=int, default=None,
                   help="the server's --max-batch (default: the server's own, the engine's call size)")
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    precision = args.precision
    tmp = tempfile.TemporaryDirectory(prefix="bench-studio-")
    run = Path(args.model).resolve() if args.model else random_run(Path(tmp.name))
    port = free_port()
    extra = ("--max-jobs", str(max(2, args.mixed))) if args.mixed > 0 else ()
    if args.batch_wait_ms is not None:
        extra += ("--batch-wait-ms", str(args.batch_wait_ms))
    if args.max_batch is not None:
        extra += ("--max-batch", str(args.max_batch))
    server = start_server(run, port, args.engine, precision, extra)
    result = {"cpu": cpu_model(), "cpu_count": os.cpu_count(),
              "model": str(run) if args.model else "random-weights dcgan 64x64", "engine": args.engine,
              "precision": precision, "seconds": args.seconds, "batch_wait_ms": args.batch_wait_ms,
              "max_batch": args.max_batch, "ramp_seconds": args.ramp_seconds,
              "load_avg_1min_before": round(os.getloadavg()[0], 2)}
    try:
        drive(port, 2, 2.0)  # warm-up: first requests trace nothing, but fill caches and pools
        for clients in (int(c) for c in args.clients.split(",") if c.strip()):
            # a ramp at this count first, as load tools do: the clients' requests fall into step
            # with the server's calls within about 2 s (measured); the ramp's figures are kept
            ramp = drive(port, clients, args.ramp_seconds, seed=clients + 500) if args.ramp_seconds > 0 else None
            before = next(iter(server_stats(port).values()))
            result[f"clients_{clients}"] = drive(port, clients, args.seconds, seed=clients)
            if ramp is not None:
                result[f"clients_{clients}"]["ramp"] = ramp
            after = next(iter(server_stats(port).values()))
            calls = after["batches"] - before["batches"]
            result[f"clients_{clients}"]["mean_batch"] = round((after["rows"] - before["rows"]) / max(calls, 1), 2)
        # the peer: the same compiled forward in this process, no HTTP, no batching queue
        result["forward_batch1_ms"] = round(raw_forward_ms(run, args.engine, precision), 2)
        result["forward_batch8_ms"] = round(raw_forward_ms(run, args.engine, precision, batch=8, repeats=50), 2)
        result["forward_only_requests_per_s_8"] = round(8000 / result["forward_batch8_ms"], 1)
        one = result.get("clients_1")
        if one and one["p50_ms"] is not None:
            result["overhead_p50_ms"] = round(one["p50_ms"] - result["forward_batch1_ms"], 2)
        if args.soak_minutes > 0:
            start_rss, samples, soak = rss_mb(server.pid), [], {"requests": 0, "errors": 0}
            end = time.monotonic() + args.soak_minutes * 60
            while time.monotonic() < end:
                part = drive(port, 8, min(10.0, end - time.monotonic()), seed=len(samples) + 100)
                soak["requests"] += part["requests"]
                soak["errors"] += part["errors"]
                samples.append(round(rss_mb(server.pid), 1))
            soak.update({"minutes": args.soak_minutes, "rss_start_mb": round(start_rss, 1),
                         "rss_end_mb": samples[-1], "rss_max_mb": max(samples),
                         "memory_growth": round(max(samples) / start_rss - 1, 4)})
            result["soak"] = soak
        if args.mixed > 0:
            result["mixed"] = mixed(port, args.mixed_edit_clients, args.mixed, args.seconds, args.heavy_method)
    finally:
        server.terminate()
        server.wait(timeout=30)
        tmp.cleanup()
    result["load_avg_1min_after"] = round(os.getloadavg()[0], 2)
    checks = {}
    if "clients_1" in result:
        p50 = result["clients_1"]["p50_ms"]
        checks["p50_ms_1"] = p50 is not None and p50 <= TARGETS["p50_ms_1"]
    if "clients_8" in result:
        c8 = result["clients_8"]
        checks["p99_ms_8"] = c8["p99_ms"] is not None and c8["p99_ms"] <= TARGETS["p99_ms_8"]
        checks["requests_per_s_8"] = c8["requests_per_s"] >= TARGETS["requests_per_s_8"]
    checks["no_errors"] = all(result[k]["errors"] == 0 for k in result if k.startswith("clients_"))
    if "soak" in result:
        checks["soak_memory"] = result["soak"]["memory_growth"] < TARGETS["memory_growth"]
        checks["soak_no_errors"] = result["soak"]["errors"] == 0
    if "mixed" in result:
        m = result["mixed"]
        p99 = m["together"]["edits"]["p99_ms"]
        checks["mixed_edit_p99_ms"] = p99 is not None and p99 <= TARGETS["mixed_edit_p99_ms"]
        checks["mixed_no_errors"] = (m["edits_alone"]["errors"] == m["together"]["edits"]["errors"] == 0
                                     and m["heavy_alone"]["errors"] == m["together"]["heavy"]["errors"] == 0)
    result["targets"] = TARGETS
    result["checks"] = checks
    result["pass"] = all(checks.values())
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

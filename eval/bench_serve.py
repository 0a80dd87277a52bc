"""Load test of `recsys-llm serve`: concurrent clients with mixed traffic, the in-process Recommender on the
same mix, then a restart that must find every acknowledged write.

    python eval/bench_serve.py --run-dir runs/demo --clients 8,64 --duration 60                  # the mix
    python eval/bench_serve.py --run-dir runs/demo --clients 8,64 --mix recommend --workers 2    # the aims

Traffic per request (``--mix mixed``): recommend for a known user 80% (no reranking unless --rerank),
anonymous user from 1-3 items or a text 5%, similar items 5%, add one item 5%, post one interaction 5%;
``--mix recommend``: known-user recommendations only. Each client is one keep-alive connection driven by a
minimal asyncio HTTP/1.1 client (:class:`Connection`), because the load generator shares the machine's cores
with the service. The service runs on a scratch
copy of the run (the run itself is left untouched) with --workers processes. Reported per client count:
requests/s, p50/p95/p99 per endpoint, errors; then the in-process `LiveRecommender` on the same mix (one
thread, no HTTP) and the HTTP/in-process throughput ratio; finally the service is SIGKILLed, restarted, and
every acknowledged item and interaction is looked up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# idle OpenMP threads sleep instead of spinning (before torch loads): spinning made the in-process encoder
# 10-50x slower on a busy 2-core machine
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from recsys_llm.serve.live import LiveRecommender  # noqa: E402
from recsys_llm.serve.served import ServedConfig  # noqa: E402

MIXES = {"mixed": [("recommend", 0.80), ("anonymous", 0.05), ("similar", 0.05), ("add_item", 0.05),
                   ("interaction", 0.05)],
         "recommend": [("recommend", 1.0)]}  # the aims' workload: known-user recommendations only
MIX = MIXES["mixed"]
TEXTS = ["space rocket astronaut", "a cooking show", "slow-burning crime drama", "comedy about a family",
         "animated adventure for kids", "documentary about the sea"]


# ------------------------------------------------------------------------------------------ 1. the service
def start_service(run: Path, workers: int, log: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_WAIT_POLICY": "PASSIVE"}
    with open(log, "ab") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen([sys.executable, "-c", "import sys; from recsys_llm.cli import main; "
                                 "sys.exit(main(sys.argv[1:]))", "serve", "--run-dir", str(run), "--port",
                                 str(port), "--workers", str(workers)], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"service exited ({proc.returncode}); see {log}")
        try:
            if httpx.get(url + "/ready", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"service not ready after 180 s; see {log}")


def kill_service(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)  # the service and its workers, as a crash would
    proc.wait(30)


# ------------------------------------------------------------------------------------------ 2. the traffic
class Traffic:
    """Random requests of the mix; remembers acknowledged writes."""

    def __init__(self, users: list[str], items: list[str], seed: int, rerank: bool, mix: str = "mixed") -> None:
        self.users, self.items, self.rerank, self.mix = users, items, rerank, MIXES[mix]
        self.rng = random.Random(seed)
        self.acked_items: list[str] = []
        self.acked_events: list[tuple[str, str]] = []
        self.n = 0

    def pick(self) -> str:
        return self.rng.choices([m for m, _ in self.mix], [w for _, w in self.mix])[0]

    def request(self, op: str, tag: str) -> tuple[str, str, dict | None]:
        rng = self.rng
        self.n += 1
        if op == "recommend":
            return "POST", "/recommend", {"user_id": rng.choice(self.users), "k": 10, "rerank": self.rerank}
        if op == "anonymous":
            if rng.random() < 0.5:
                return "POST", "/recommend/anonymous", {"items": rng.sample(self.items, rng.randint(1, 3)), "k": 10}
            return "POST", "/recommend/anonymous", {"text": rng.choice(TEXTS), "k": 10}
        if op == "similar":
            return "GET", f"/items/{rng.choice(self.items)}/similar?k=10", None
        if op == "add_item":
            item_id = f"bench-{tag}-{self.n}"
            return "POST", "/items", {"items": [{"item_id": item_id, "title": f"Bench item {self.n}",
                                                 "description": rng.choice(TEXTS)}]}
        user = rng.choice(self.users) if rng.random() < 0.8 else f"bench-user-{tag}-{self.n}"
        return "POST", "/interactions", {"events": [{"user_id": user, "item_id": rng.choice(self.items)}]}

    def acknowledged(self, op: str, body: dict | None) -> None:
        if op == "add_item" and body is not None:
            self.acked_items.append(body["items"][0]["item_id"])
        elif op == "interaction" and body is not None:
            ev = body["events"][0]
            self.acked_events.append((ev["user_id"], ev["item_id"]))


class Connection:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams: the load generator shares the service's 2
    cores, and httpx spends ~5x more CPU per request than this (JSON bodies, Content-Length answers only)."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.host, self.port = host, int(port)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: dict | None) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        data = json.dumps(body).encode() if body is not None else b""
        head = (f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\n\r\n").encode()
        self.writer.write(head + data)
        lines = (await self.reader.readuntil(b"\r\n\r\n")).split(b"\r\n")
        status = int(lines[0].split()[1])
        length = next(int(v) for k, _, v in (ln.partition(b":") for ln in lines[1:]) if k.lower() == b"content-length")
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def client(url: str, traffic: Traffic, tag: str, stop_at: float, lat: dict, errors: dict) -> None:
    conn = Connection(url)
    try:
        while time.perf_counter() < stop_at:
            op = traffic.pick()
            method, path, body = traffic.request(op, tag)
            t0 = time.perf_counter()
            try:
                status, text = await asyncio.wait_for(conn.request(method, path, body), 60)
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError, StopIteration) as e:
                lat[op].append(time.perf_counter() - t0)
                errors[op].append(type(e).__name__)
                await conn.close()
                conn = Connection(url)  # a fresh connection for the next request
                continue
            lat[op].append(time.perf_counter() - t0)
            if status == 200:
                traffic.acknowledged(op, body)
            else:
                errors[op].append(f"{status} {text[:120].decode(errors='replace')}")
    finally:
        await conn.close()


async def http_phase(url: str, traffic: Traffic, clients: int, duration: float) -> dict:
    lat: dict[str, list[float]] = defaultdict(list)
    errors: dict[str, list[str]] = defaultdict(list)
    t0 = time.perf_counter()
    await asyncio.gather(*[client(url, traffic, f"{clients}c{i}", t0 + duration, lat, errors)
                           for i in range(clients)])
    return summarise(lat, errors, time.perf_counter() - t0)


def summarise(lat: dict[str, list[float]], errors: dict[str, list[str]], seconds: float) -> dict:
    rows = {}
    for op, _ in MIX:
        ms = np.asarray(lat.get(op, []), dtype=float) * 1000
        rows[op] = {"n": int(len(ms)), "rps": len(ms) / seconds, "errors": len(errors.get(op, [])),
                    **({f"p{q}": float(np.percentile(ms, q)) for q in (50, 95, 99)} if len(ms) else {})}
    total = sum(r["n"] for r in rows.values())
    return {"seconds": seconds, "requests": total, "rps": total / seconds,
            "errors": sum(r["errors"] for r in rows.values()), "endpoints": rows,
            "error_samples": {op: e[:3] for op, e in errors.items() if e}}


# ------------------------------------------------------------------------------------------ 3. in process
def in_process(run: Path, traffic: Traffic, duration: float) -> dict:
    """The same mix through a LiveRecommender in this process: one thread, no HTTP, no micro-batching."""
    live = LiveRecommender.load(str(run))
    rec = live.rec
    rec.encoder  # noqa: B018
    lat: dict[str, list[float]] = defaultdict(list)
    blas = threadpool_limits(limits=1, user_api="blas")  # as the service runs (create_app's blas_threads)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < duration:
        op = traffic.pick()
        _, _, body = traffic.request(op, "inproc")
        s = time.perf_counter()
        if op == "recommend":
            live.rec.rows(*live.list_user(body["user_id"], k=10, served=None if traffic.rerank else _no_rerank(rec)))
        elif op == "anonymous":
            rec.rows(*rec.list_new(items=body.get("items", []), text=body.get("text"), k=10))
        elif op == "similar":
            rec.similar(int(rec.item_internal([traffic.rng.choice(traffic.items)])[0]), 10)
        elif op == "add_item":
            frame = pd.DataFrame(body["items"])
            emb = rec.encoder.encode_items(live.check_items(frame, False), rec.cfg.text.item_max_tokens,
                                           show_progress=False)
            with live.log.locked():
                live.sync()
                live.write_items(frame, emb, False)
        else:
            with live.log.locked():  # as the service does: the user's new text vector encoded once, logged
                live.sync()
                texts = live.interaction_texts(body["events"])
                vectors = rec.encode_user_texts(list(texts.values())) if texts else []
                live.write_interactions(body["events"], dict(zip(texts, vectors, strict=True)))
        lat[op].append(time.perf_counter() - s)
    blas.restore_original_limits()
    return summarise(lat, {}, time.perf_counter() - t0)


def _no_rerank(rec) -> ServedConfig:  # noqa: ANN001
    return ServedConfig(rec.served.first_stage, chosen_by=rec.served.chosen_by)


# ------------------------------------------------------------------------------------------ 4. durability
def verify(url: str, traffic: Traffic) -> dict:
    missing_items, missing_events = [], []
    with httpx.Client(base_url=url, timeout=30) as c:
        for item_id in traffic.acked_items:
            if c.get(f"/items/{item_id}/similar?k=1").status_code != 200:
                missing_items.append(item_id)
        histories: dict[str, set[str]] = {}
        for user, item in traffic.acked_events:
            if user not in histories:
                r = c.get(f"/users/{user}")
                histories[user] = {h["item_id"] for h in r.json()["history"]} if r.status_code == 200 else set()
            if item not in histories[user]:
                missing_events.append((user, item))
    return {"acknowledged_items": len(traffic.acked_items), "missing_items": len(missing_items),
            "acknowledged_interactions": len(traffic.acked_events), "missing_interactions": len(missing_events),
            "examples": {"items": missing_items[:5], "interactions": missing_events[:5]}}


def table(name: str, res: dict) -> str:
    lines = [f"{name}: {res['requests']} requests in {res['seconds']:.1f} s = {res['rps']:.0f} req/s, "
             f"{res['errors']} errors",
             f"  {'endpoint':12s} {'n':>6s} {'req/s':>7s} {'p50 ms':>7s} {'p95 ms':>7s} {'p99 ms':>7s} {'err':>4s}"]
    for op, r in res["endpoints"].items():
        if r["n"]:
            lines.append(f"  {op:12s} {r['n']:6d} {r['rps']:7.1f} {r['p50']:7.1f} {r['p95']:7.1f} {r['p99']:7.1f} "
                         f"{r['errors']:4d}")
    return "\n".join(lines)


def main() -> None:
    # 1. arguments and a scratch copy of the run
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", default="runs/demo")
    p.add_argument("--clients", default="64", help="comma-separated client counts, one phase each (default 64)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds per phase (default 60)")
    p.add_argument("--inproc-duration", type=float, default=None, help="seconds in process (default --duration)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--rerank", action="store_true", help="recommend with the served reranker")
    p.add_argument("--mix", choices=sorted(MIXES), default="mixed",
                   help="mixed: the issue's traffic mix (default); recommend: known-user recommendations only")
    p.add_argument("--out", help="write the results as JSON here")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench_serve_"))
    run, inproc_run = scratch / "run", scratch / "run_inproc"
    shutil.copytree(args.run_dir, run)
    shutil.copytree(args.run_dir, inproc_run)
    log = scratch / "service.log"
    # 2. users and items to ask about
    users = pd.read_parquet(run / "data" / "users.parquet")["user_id"].astype(str).tolist()
    items = pd.read_parquet(run / "data" / "items.parquet")["item_id"].astype(str).tolist()
    traffic = Traffic(users, items, args.seed, args.rerank, args.mix)
    proc, url = start_service(run, args.workers, log)
    results: dict = {"command": " ".join(sys.argv), "workers": args.workers, "rerank": args.rerank, "mix": args.mix,
                     "cpus": os.cpu_count(), "phases": {}}
    # 3. the HTTP phases
    try:
        for n in [int(c) for c in args.clients.split(",")]:
            res = asyncio.run(http_phase(url, traffic, n, args.duration))
            results["phases"][f"{n} clients"] = res
            print(table(f"HTTP, {n} clients, {args.workers} worker(s)", res), flush=True)
    finally:
        kill_service(proc)
    # 4. in process, same mix
    inproc = in_process(inproc_run, Traffic(users, items, args.seed + 1, args.rerank, args.mix),
                        args.inproc_duration or args.duration)
    results["in_process"] = inproc
    print(table("in-process LiveRecommender (1 thread)", inproc))
    for name, res in results["phases"].items():
        rec_ratio = res["endpoints"]["recommend"]["rps"] / max(inproc["endpoints"]["recommend"]["rps"], 1e-9)
        res["ratio_vs_in_process"] = {"all": res["rps"] / inproc["rps"], "recommend": rec_ratio}
        print(f"HTTP / in-process throughput, {name}: {res['rps'] / inproc['rps']:.2f}x all requests")
    # 5. SIGKILLed above: restart and look up every acknowledged write
    proc, url = start_service(run, 1, log)
    try:
        results["durability"] = verify(url, traffic)
    finally:
        kill_service(proc)
    print("after SIGKILL + restart:", json.dumps(results["durability"]))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()

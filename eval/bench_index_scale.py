"""ANN at scale: exact FAISS search vs every candidate index and the automatic choice, at 1M items.

For each data set (below), in ONE process with the same FAISS/BLAS thread count for everything:

1. exact: brute-force inner product over all N items with FAISS's exact kernel (``faiss.knn`` with
   ``METRIC_INNER_PRODUCT``: the ``knn_inner_product`` BLAS GEMM that ``IndexFlatIP.search`` runs, without
   the index's 1.5 GiB copy of the vectors), the queries searched as one batch; its top-k is the ground truth.
   Exact queries/s is measured right before and right after each index's timed test pass, on
   ``--exact-queries`` of the test queries (best of ``--repeats`` each, mean of the two); that index's ratio
   uses this paired figure, so load from other processes on a shared machine hits both sides alike.
2. every candidate in ``--candidates`` (FAISS factory strings through :class:`FaissIndex`, built on the
   CPU; IVF types trained on ``--train-per-list`` x nlist sampled vectors with ``--train-iters`` k-means
   iterations), its search setting tuned on the TUNING queries with
   :func:`recsys_llm.index.tuning.tune` (doubling, then bisection: the smallest nprobe / ef_search whose
   recall@k reaches ``--target``); then recall@k and queries/s on the TEST queries (one batch, best of
   ``--repeats``), and a recall/QPS curve on the test queries (the plot). Build time = train + add.
3. ``auto``: what ``recsys-llm index build`` does with the default config: ``index_from_config(IndexConfig())``
   (:func:`recsys_llm.index.choose.auto_factory` picks the type, training sample and k_factor for N x d within
   the default memory budget), tuned the same way; its tuned setting is saved to and loaded back from a
   folder, and the loaded index is what is measured (so ``index.json`` carries the setting).

Memory: ``serialized_bytes`` of each index (what it holds in RAM, id map included) and this process's peak RSS.

Data sets (d = 384, unit vectors, seeded):

* ``synthetic``: hierarchical clusters: 100 unit "topics", 10,000 centres ``normalise(topic + 0.8 u)``,
  items ``normalise(centre + sigma g / sqrt(d))`` with ``sigma = --synthetic-sigma``; queries are fresh
  items of random centres.
* ``real``: the 1,682 ml-100k items (``../shared/data/ml-100k``, text ``TextConfig().item_template``)
  encoded by the default backbone (all-MiniLM-L6-v2, untuned), cached in ``--cache``; item j is
  ``normalise(e[j mod 1682] + sigma g_j ||e|| / sqrt(d))`` with ``sigma = --real-sigma`` (the recipe of
  ``eval/bench_index.py``); queries are fresh noisy copies of random catalog items (tuning and test
  queries drawn from disjoint items).

Usage:
    python eval/bench_index_scale.py --out runs/bench_index_scale            # 1M items, 21 min on 2 busy cores
    python eval/bench_index_scale.py --n 100000 --out runs/bench_index_100k  # quick check, ~3 min
    python eval/bench_index_scale.py --candidates "" --datasets real         # the auto index alone, ~6 min

On 2 cores shared with other work (load average ~7) the full 1M run took 1,242 s: the two IVF4096 builds per
data set (~2-3 min each: k-means of 4,096 centroids, then 1M adds) and exact search at 6-13 queries/s dominate.

Writes ``--out``/results.json, results.md (the table) and recall_qps.png (the curves).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import faiss
import numpy as np

from recsys_llm.config import IndexConfig
from recsys_llm.index.choose import auto_factory, index_from_config
from recsys_llm.index.faiss_index import FaissIndex
from recsys_llm.index.registry import load_index
from recsys_llm.index.tuning import recall_at_k, sweep, timed_search, tune
from recsys_llm.io_utils import atomic_write_json

DEFAULT_CANDIDATES = "IVF1024,Flat;IVF4096_HNSW32,Flat;IVF4096_HNSW32,SQ8,RFlat;HNSW32"
D = 384

# ------------------------------------------------------------------------------------------ 0. arguments
parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--n", type=int, default=1_000_000, help="indexed vectors per data set")
parser.add_argument("--datasets", default="synthetic,real", help="comma-separated: synthetic, real")
parser.add_argument("--candidates", default=DEFAULT_CANDIDATES, help="';'-separated FAISS factory strings")
parser.add_argument("--k-factor", type=int, default=4, help="k_factor of the ',RFlat' candidates")
parser.add_argument("--hnsw-max-n", type=int, default=200_000,
                    help="build HNSW candidates only up to this N (graph construction on 2 cores takes ~20+ min "
                         "at 1M)")
parser.add_argument("--queries", type=int, default=300, help="test queries")
parser.add_argument("--tune-queries", type=int, default=200, help="tuning queries (disjoint sources)")
parser.add_argument("--k", type=int, default=10, help="recall@k")
parser.add_argument("--target", type=float, default=0.95, help="recall@k every search setting is tuned to")
parser.add_argument("--train-per-list", type=int, default=16, help="IVF candidates: training vectors per list")
parser.add_argument("--train-iters", type=int, default=10, help="IVF candidates: k-means iterations")
parser.add_argument("--threads", type=int, default=2, help="FAISS OpenMP (and BLAS) threads, for every index")
parser.add_argument("--exact-queries", type=int, default=50, help="test queries of each exact QPS pass")
parser.add_argument("--repeats", type=int, default=2, help="best-of passes per QPS number")
parser.add_argument("--synthetic-sigma", type=float, default=1.0, help="noise of the synthetic items")
parser.add_argument("--real-sigma", type=float, default=1.0, help="noise of the tiled real vectors")
parser.add_argument("--cache", default="runs/bench_index_scale/ml100k_minilm.npy", help="real vectors cache")
parser.add_argument("--out", default="runs/bench_index_scale", help="output folder")
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()
datasets = [s.strip() for s in args.datasets.split(",") if s.strip()]
candidates = [c.strip() for c in args.candidates.split(";") if c.strip()]
if not datasets or set(datasets) - {"synthetic", "real"}:
    parser.error(f"--datasets={args.datasets!r}: a comma-separated list of synthetic, real")
for name in ("n", "exact_queries", "queries", "tune_queries", "k", "threads", "repeats", "train_per_list", "train_iters",
             "k_factor"):
    if getattr(args, name) < 1:
        parser.error(f"--{name.replace('_', '-')}={getattr(args, name)}: must be >= 1")
if args.n <= 50_000:
    parser.error(f"--n={args.n}: use more than 50,000 items (below that the automatic choice is exact search)")
if not 0 < args.target <= 1:
    parser.error(f"--target={args.target}: a recall in (0, 1]")
for c in candidates:
    try:
        FaissIndex(D, c, use_gpu="no")
    except ValueError as e:
        parser.error(f"--candidates: {e}")
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)

# ------------------------------------------------------------------------------------------ 1. environment
faiss.omp_set_num_threads(args.threads)
try:
    from threadpoolctl import threadpool_limits

    threadpool_limits(args.threads)
except ImportError:
    pass
T0 = time.perf_counter()


def say(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:7.1f}s] {msg}", flush=True)


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


env = {"faiss": faiss.__version__, "numpy": np.__version__, "python": platform.python_version(),
       "threads": faiss.omp_get_max_threads(), "cpus": os.cpu_count(), "loadavg_start": os.getloadavg()[0]}
say(f"faiss {env['faiss']}, {env['threads']} threads, {env['cpus']} CPUs, load {env['loadavg_start']:.2f}; "
    f"N={args.n:,}, {args.tune_queries} tuning + {args.queries} test queries, k={args.k}, target {args.target}")


# ------------------------------------------------------------------------------------------ 2. data
def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def noisy(base: np.ndarray, sources: np.ndarray, sigma: float, seed: list[int], chunk: int = 100_000):
    """normalise(base[s] + sigma g ||base[s]|| / sqrt(d)) per source s, g ~ N(0, I), in row order."""
    rng = np.random.default_rng(seed)
    x = np.empty((len(sources), D), dtype=np.float32)
    for start in range(0, len(sources), chunk):
        b = base[sources[start : start + chunk]]
        g = rng.standard_normal(b.shape, dtype=np.float32)
        x[start : start + len(b)] = unit(b + (sigma / np.sqrt(D)) * g * np.linalg.norm(b, axis=1, keepdims=True))
    return x


def real_vectors() -> np.ndarray:
    cache = Path(args.cache)
    if cache.exists():
        return np.load(cache)
    from recsys_llm.config import DataConfig, EncoderConfig, TextConfig
    from recsys_llm.data.io import load_dataset
    from recsys_llm.encoder.model import TwoTowerEncoder
    from recsys_llm.text.templates import item_texts

    path = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ml-100k"
    if not path.is_dir():
        sys.exit(f"{path}: ml-100k not found; pass --datasets synthetic, or --cache with (n, 384) item vectors")
    text = TextConfig()
    texts = item_texts(load_dataset(DataConfig(dataset="ml-100k", path=str(path))).items, text.item_template)
    enc = TwoTowerEncoder.from_config(EncoderConfig(), lora=False, device="cpu")
    emb = enc.encode_items(texts, text.item_max_tokens, show_progress=False)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, emb)
    return emb


def make_data(name: str):
    """``(items, tuning queries, test queries, description)``."""
    nq = args.tune_queries + args.queries
    if name == "synthetic":
        rng = np.random.default_rng([args.seed, 10])
        topics = unit(rng.standard_normal((100, D), dtype=np.float32))
        centres = unit(topics[rng.integers(0, 100, 10_000)] + 0.8 * unit(rng.standard_normal((10_000, D),
                                                                                           dtype=np.float32)))
        items = noisy(centres, rng.integers(0, 10_000, args.n), args.synthetic_sigma, [args.seed, 11])
        q = noisy(centres, rng.integers(0, 10_000, nq), args.synthetic_sigma, [args.seed, 12])
        desc = f"synthetic: 100 topics, 10,000 centres, sigma {args.synthetic_sigma}"
    else:
        emb = unit(real_vectors())
        c = len(emb)
        items = noisy(emb, np.arange(args.n) % c, args.real_sigma, [args.seed, 21])
        src = np.random.default_rng([args.seed, 22]).permutation(c)
        q_src = np.concatenate([np.resize(src[: c // 3], args.tune_queries), np.resize(src[c // 3 :], args.queries)])
        q = noisy(emb, q_src, args.real_sigma, [args.seed, 23])
        desc = (f"real: {c:,} ml-100k MiniLM item vectors tiled to {args.n:,} with noise sigma {args.real_sigma} "
                f"(~{args.n // c} copies each)")
    return items, q[: args.tune_queries], np.ascontiguousarray(q[args.tune_queries :]), desc


# ------------------------------------------------------------------------------------------ 3. measure
def exact_search(items: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Exact top-k ids (FAISS's IndexFlatIP kernel on the caller's array)."""
    return faiss.knn(queries, items, args.k, metric=faiss.METRIC_INNER_PRODUCT)[1]


def exact_qps(items: np.ndarray, queries: np.ndarray) -> float:
    """Exact queries/s on ``queries`` as one batch, best of ``--repeats``."""
    best = np.inf
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        exact_search(items, queries)
        best = min(best, time.perf_counter() - t0)
    return len(queries) / best


def tune_row(index: FaissIndex, data: dict):
    """``(tuned row, note)``: the smallest setting reaching the target on the tuning queries (set on the index),
    else the best one measured."""
    try:
        return tune(index, data["tune_q"], data["tune_truth"], args.k, args.target), ""
    except ValueError as e:
        rows = sweep(index, data["tune_q"], data["tune_truth"], args.k)
        tuned = max(rows, key=lambda r: r.recall)
        if tuned.param:
            index.set_search_params(**{tuned.param: tuned.value})
        return tuned, f"target not reached: {e}"


def measure(label: str, index: FaissIndex, build_s: float, data: dict, tuned=None, note: str = "") -> dict:
    """Tune on the tuning queries (unless ``tuned`` is given), measure on the test queries, sweep the curve."""
    if tuned is None:
        tuned, note = tune_row(index, data)
    exact_before = exact_qps(data["items"], data["test_q"][: args.exact_queries])
    ids, qps = timed_search(index, data["test_q"], args.k, repeats=args.repeats)
    exact_after = exact_qps(data["items"], data["test_q"][: args.exact_queries])
    exact = (exact_before + exact_after) / 2
    recall = recall_at_k(ids, data["truth"])
    param = tuned.param
    values = sorted({v for v in (1, 2, 4, 8, 16, 32, 64, 128, 256) if param and v < (tuned.value or 0) * 4}
                    | ({tuned.value} if param else set()))
    curve = [dict(asdict(r), ratio=r.qps / exact)
             for r in sweep(index, data["test_q"], data["truth"], args.k, values=values or None, repeats=args.repeats)]
    p = index.params()
    row = dict(index=label, factory=index.factory, setting=tuned.setting, k_factor=p.get("k_factor"),
               loaded_setting={k: p.get(k) for k in ("nprobe", "ef_search", "k_factor") if p.get(k)},
               tune_recall=tuned.recall, recall=recall, qps=qps, build_s=build_s, exact_qps=exact,
               exact_qps_before=exact_before, exact_qps_after=exact_after, ratio=qps / exact,
               goal_met=qps / exact >= 20 and recall >= args.target,
               bytes_per_item=index.serialized_bytes() / index.ntotal,
               index_gib=index.serialized_bytes() / 2**30, peak_rss_gib=peak_rss_gib(), curve=curve, note=note)
    say(f"  {label}: {row['setting']} recall@{args.k} {recall:.4f}, {qps:,.0f} q/s = {qps / exact:.1f}x exact "
        f"({exact_before:.1f} / {exact_after:.1f} q/s before / after), build {build_s:.0f} s, "
        f"{row['bytes_per_item']:.0f} B/item{' (' + note + ')' if note else ''}")
    return row


def build(index: FaissIndex, items: np.ndarray, ids: np.ndarray) -> float:
    t0 = time.perf_counter()
    index.add(items, ids)
    return time.perf_counter() - t0


def run_dataset(name: str) -> dict:
    items, tune_q, test_q, desc = make_data(name)
    ids = np.arange(len(items), dtype=np.int64)
    say(f"[{name}] {desc}; {items.nbytes / 2**30:.2f} GiB")
    t0 = time.perf_counter()
    truth, tune_truth = exact_search(items, test_q), exact_search(items, tune_q)
    first = (len(test_q) + len(tune_q)) / (time.perf_counter() - t0)
    data = dict(items=items, tune_q=tune_q, tune_truth=tune_truth, test_q=test_q, truth=truth)
    say(f"[{name}] exact ground truth: {first:.1f} q/s")
    rows = []
    choice = auto_factory(args.n, D)
    for factory in candidates:
        if factory == choice.factory:
            say(f"  {factory}: the automatic choice, measured once as the auto row")
            continue
        if "HNSW" in factory.split(",")[0] and not factory.startswith("IVF") and args.n > args.hnsw_max_n:
            rows.append(dict(index=factory, factory=factory, skipped=f"N > --hnsw-max-n={args.hnsw_max_n:,}"))
            say(f"  {factory}: skipped ({rows[-1]['skipped']})")
            continue
        nlist = FaissIndex(D, factory, use_gpu="no").nlist
        idx = FaissIndex(D, factory, use_gpu="no", train_sample=args.train_per_list * nlist if nlist else None,
                         train_iters=args.train_iters if nlist else None,
                         k_factor=args.k_factor if factory.endswith("RFlat") else None)
        rows.append(measure(factory, idx, build(idx, items, ids), data))
        del idx
    idx, reason = index_from_config(IndexConfig(use_gpu="no"), D, args.n)
    say(f"[{name}] auto: {reason}")
    label, build_s = f"auto ({idx.factory})", build(idx, items, ids)
    tuned, note = tune_row(idx, data)
    with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:  # what a run serves: the saved folder,
        idx.save(tmp)  # loaded back with the setting index.json holds
        del idx
        loaded = load_index(tmp, use_gpu="no")
    auto_row = measure(label, loaded, build_s, data, tuned, note)
    del loaded
    return dict(dataset=name, description=desc, exact_qps_ground_truth=first, auto_choice=asdict(choice),
                auto_reason=reason, rows=rows, auto=auto_row)


# ------------------------------------------------------------------------------------------ 4. report
def table(results: list[dict]) -> list[str]:
    lines = [f"ANN at scale, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: N = {args.n:,}, d = {D}, "
             f"faiss {env['faiss']}, {env['threads']} threads for exact and ANN alike, {env['cpus']} CPUs "
             f"(load average {env['loadavg_start']:.1f} at the start: shared machine); {args.queries} test / "
             f"{args.tune_queries} tuning queries, recall@{args.k} against exact, search settings tuned to "
             f"{args.target} on the tuning queries; QPS = one batch of test queries, best of {args.repeats}; "
             f"ratio = QPS / exact QPS, exact (FAISS IndexFlatIP kernel, batch of {args.exact_queries}) measured "
             "right before and after each index's pass (mean; both shown).", ""]
    for res in results:
        lines += [f"**{res['dataset']}** ({res['description']}); auto: {res['auto_reason']}", "",
                  f"| index | setting | recall@{args.k} | QPS | exact QPS (before / after) | x exact | build (s) | "
                  f"bytes/item | index GiB | goal (>= 20x, recall >= {args.target}) |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in [*res["rows"], res["auto"]]:
            if "skipped" in r:
                lines.append(f"| {r['index']} | skipped: {r['skipped']} | | | | | | | | |")
                continue
            lines.append(f"| {r['index']} | {r['setting']}{', k_factor=' + str(r['k_factor']) if r['k_factor'] else ''}"
                         f" | {r['recall']:.4f} | {r['qps']:,.0f} | {r['exact_qps_before']:.1f} / "
                         f"{r['exact_qps_after']:.1f} | {r['ratio']:.1f}x | {r['build_s']:.0f} | "
                         f"{r['bytes_per_item']:.0f} | {r['index_gib']:.2f} | {'met' if r['goal_met'] else 'not met'} |")
        lines.append("")
    lines.append(f"Peak RSS of the process: {peak_rss_gib():.2f} GiB; wall time {time.perf_counter() - T0:.0f} s.")
    return lines


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6.5 * len(results), 4.8), squeeze=False)
    for ax, res in zip(axes[0], results, strict=True):
        for r in [*res["rows"], res["auto"]]:
            if "curve" not in r:
                continue
            xs = [c["ratio"] for c in r["curve"]]
            ys = [c["recall"] for c in r["curve"]]
            style = dict(lw=2.5, color="black") if r is res["auto"] else dict(lw=1.2)
            ax.plot(xs, ys, marker="o", ms=3, label=r["index"], **style)
            ax.annotate(r["setting"], (r["ratio"], r["recall"]), fontsize=7)
        ax.axhline(args.target, ls="--", color="grey", lw=0.8)
        ax.axvline(20, ls=":", color="grey", lw=0.8)
        ax.set(xscale="log", xlabel="queries/s vs exact IndexFlatIP (x)", ylabel=f"recall@{args.k}",
               title=f"{res['dataset']}, N={args.n:,}")
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


results: list[dict] = []
for name in datasets:  # written after each data set, so a long run leaves what it has measured
    results.append(run_dataset(name))
    lines = table(results)
    (out / "results.md").write_text("\n".join(lines) + "\n")
    atomic_write_json(out / "results.json", {"args": vars(args), "env": env, "results": results, "table": lines})
    plot(results, out / "recall_qps.png")
print("\n" + "\n".join(lines), flush=True)
say(f"wrote {out / 'results.md'}, {out / 'results.json'}, {out / 'recall_qps.png'}")

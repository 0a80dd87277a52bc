"""Cross-encoder reranking speed: pairs/s, latency per user, achieved FLOP/s against the machine's own GEMM.

The real backbone (``--backbone minilm``: all-MiniLM-L6-v2 + LoRA r=16 + linear head, the defaults of
``RerankConfig``) scores realistic pairs from the bundled ml-latest-small data: the user text is the user's 10
most recent titles before the last rating (``history_text``), the item text is the default template
(``title_genres_tags``), and each user's candidates are ``max(--depths)`` catalog items drawn without
replacement in proportion to popularity (a retriever's candidates are mostly popular items, so item texts
recur across users as they do in production). The reranker is first trained for ``--train-steps`` steps on
other users (next item vs popular negatives), so LoRA is not a no-op and the head ranks something; speed
does not depend on the weights.

Variants (``--variants``), all with the same weights:
    fp32        the model as trained (LoRA branches unmerged), item token cache off: the path before caching
    fp32+cache  the same model with the item token cache (``CrossEncoder.item_cache_size``): same scores
    merged      ``for_scoring("none")``: LoRA merged into the backbone, float32, cache on
    int8        ``for_scoring("int8")``: merged + dynamic int8 nn.Linear (CPU), cache on
    bf16        ``for_scoring("bf16")``: merged + bfloat16 weights (fast with AMX/AVX512-BF16), cache on

Measured, for every ``--max-tokens`` and rerank depth in ``--depths``:
    * pairs/s: one ``score()`` call over ``--pairs`` pairs (``ceil(pairs / depth)`` users x ``depth``
      candidates, batched across users the way ``Reranker.score_candidates`` does), after an untimed warm-up
      call on other users (it also fills the item cache, as earlier users would in a long run);
    * latency per user: one ``score()`` call with one user's ``depth`` candidates, median and p90 over
      ``--latency-users`` users (one untimed user first);
    * achieved FLOP/s = model FLOPs / wall time, against the fp32 GEMM peak measured in the same run
      (``torch.mm`` of two ``--gemm-size``-square float32 matrices, best of ``--gemm-repeats``, same torch
      thread count). Model FLOPs per sequence of S tokens (biases, LayerNorm, GELU, softmax and embeddings
      left out; LoRA branches left out too, so an unmerged model's LoRA cost shows as lost efficiency):
          layers x (2 x P x S + 4 x S^2 x d),  P = 4 d^2 + 2 d d_ff  (q, k, v, output + the two FFN weights)
      i.e. 2 FLOPs per weight per token plus the attention scores QK^T and the weighted sum AV (2 S^2 d
      each). "padded" counts S = the padded batch width for every pair (what the hardware executes);
      "useful" counts each pair's real length. For MiniLM (6 layers, d=384, d_ff=1536): 21.2 MFLOP per
      token plus the attention term. int8 rows count int8 multiply-adds the same way, against the fp32 peak;
    * quality: each variant's scores against fp32's on the same throughput pairs: Spearman per user (mean,
      min), top-10 overlap per user at the depth, and the largest absolute score difference;
    * where the time goes (``--max-tokens`` first value, deepest depth, ``--split-pairs`` pairs): the same
      batches timed as tokenisation (``CrossEncoder._batches``: tokenise, cut, pad, tensors) and forward
      (``CrossEncoder._run``), and a ``torch.profiler`` run of the forward passes grouped by operator kind.

Usage:
    HF_HUB_OFFLINE=1 python eval/bench_rerank.py      # depths 20/50/100, max_tokens 64/128: ~8 min, 2 cores
    HF_HUB_OFFLINE=1 python eval/bench_rerank.py --quick      # smoke test (about a minute)
    HF_HUB_OFFLINE=1 python eval/bench_rerank.py --variants fp32 merged int8 --max-tokens 64

Prints markdown tables and writes every number to ``--out`` (default runs/bench_rerank/bench_rerank.json).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import platform
import time
from datetime import datetime, timezone

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch
from scipy.stats import spearmanr

from recsys_llm.config import DataConfig, RerankConfig, TextConfig
from recsys_llm.data.io import load_dataset
from recsys_llm.data.splits import histories
from recsys_llm.device import resolve_device
from recsys_llm.io_utils import atomic_write_json
from recsys_llm.rerank.cross_encoder import CrossEncoder
from recsys_llm.rerank.train import build_rerank_examples, train_cross_encoder
from recsys_llm.text.templates import history_text, item_texts

VARIANTS = ("fp32", "fp32+cache", "merged", "int8", "bf16")

# ------------------------------------------------------------------------------------------ 0. arguments
parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--backbone", default="minilm",
                    help="'minilm' (bundled all-MiniLM-L6-v2) or a local folder")
parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (int8 is skipped on CUDA)")
parser.add_argument("--depths", type=int, nargs="+", default=[20, 50, 100], help="rerank depths")
parser.add_argument("--max-tokens", type=int, nargs="+", default=[64, 128], help="rerank.max_tokens values")
parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS,
                    help="what to measure; fp32 always runs first (it is the quality reference)")
parser.add_argument("--pairs", type=int, default=640, help="pairs per throughput measurement (users x depth)")
parser.add_argument("--latency-users", type=int, default=8, help="users timed one by one per latency cell")
parser.add_argument("--batch-size", type=int, default=RerankConfig().score_batch_size,
                    help="rerank.score_batch_size (pairs per forward pass)")
parser.add_argument("--train-steps", type=int, default=60,
                    help="training steps before measuring (0: untrained)")
parser.add_argument("--train-lr", type=float, default=2e-3, help="learning rate of that training")
parser.add_argument("--reranker", help="a saved reranker folder (CrossEncoder.save, e.g. RUN_DIR/reranker) "
                                       "to measure instead of a briefly trained one (--backbone ignored)")
parser.add_argument("--split-pairs", type=int, default=256,
                    help="pairs of the tokenise/forward split and the profile")
parser.add_argument("--warmup-pairs", type=int, default=128, help="untimed pairs before each throughput cell")
parser.add_argument("--gemm-size", type=int, default=2048, help="side of the float32 GEMM peak measurement")
parser.add_argument("--gemm-repeats", type=int, default=7, help="GEMM repetitions (best is kept)")
parser.add_argument("--seed", type=int, default=0, help="seed of users, candidates, training")
parser.add_argument("--quick", action="store_true", help="smoke test: depth 20, 64 tokens, a few pairs")
parser.add_argument("--out", default="runs/bench_rerank/bench_rerank.json", help="JSON with every number")
args = parser.parse_args()
if args.quick:
    args.depths, args.max_tokens, args.pairs, args.latency_users = [20], [64], 40, 2
    args.train_steps, args.split_pairs, args.gemm_size, args.gemm_repeats = 2, 32, 1024, 3
variants = ["fp32"] + [v for v in args.variants if v != "fp32"]
device = resolve_device(args.device)
if device.type != "cpu" and "int8" in variants:
    variants.remove("int8")
    print("int8 skipped: dynamic int8 quantisation runs on CPU only")
logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
torch.manual_seed(args.seed)
threads = torch.get_num_threads()
load_start = os.getloadavg()
print(f"device {device}, torch {torch.__version__}, torch threads {threads}, cpus {os.cpu_count()}, "
      f"{platform.processor() or platform.machine()}, load average {load_start[0]:.2f}")


def sync() -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


# ---------------------------------------------- 1. data: user texts, popularity-drawn candidates (library)
text_cfg = TextConfig()  # default item template
ds = load_dataset(DataConfig())  # bundled ml-latest-small
titles = ds.items["title"].astype(str).tolist()
items_txt = item_texts(ds.items, text_cfg.item_template)
hist = histories(ds.interactions, ds.n_users)
rng = np.random.default_rng(args.seed)
pop = np.bincount(ds.interactions["item"].to_numpy(), minlength=ds.n_items).astype(np.float64)
eligible = np.array([u for u in range(ds.n_users) if len(hist[u]) >= 11])
rng.shuffle(eligible)
deep = max(args.depths)


def user_text(u: int) -> str:
    return history_text(hist[u][:-1], titles, 10)  # the 10 most recent titles before the last rating


def candidates(u: int) -> np.ndarray:
    return np.random.default_rng([args.seed, u]).choice(ds.n_items, deep, replace=False, p=pop / pop.sum())


need = {d: math.ceil(args.pairs / d) for d in args.depths}
n_timed = max(need.values())
train_users, warm_users, timed_users = (eligible[:400], eligible[400:400 + n_timed],
                                        eligible[400 + n_timed:400 + 2 * n_timed])
lat_users = eligible[400 + 2 * n_timed:400 + 2 * n_timed + args.latency_users + 1]
cand = {int(u): candidates(int(u)) for u in np.concatenate([warm_users, timed_users, lat_users])}
print(f"{ds.n_users} users, {ds.n_items} items; {len(timed_users)} timed users, "
      f"{len(lat_users) - 1} latency users, candidates drawn by popularity")


def workload(users: np.ndarray, depth: int) -> tuple[list[str], list[str]]:
    """Flat (user text, item text) pairs: every user with its first ``depth`` candidates."""
    u_txt = [user_text(int(u)) for u in users for _ in range(depth)]
    i_txt = [items_txt[int(i)] for u in users for i in cand[int(u)][:depth]]
    return u_txt, i_txt


# ------------------------------------------------------------- 2. the machine: float32 GEMM peak (torch.mm)
def gemm_peak() -> float:
    a = torch.randn(args.gemm_size, args.gemm_size, device=device)
    b = torch.randn(args.gemm_size, args.gemm_size, device=device)
    torch.mm(a, b)
    best = math.inf
    for _ in range(args.gemm_repeats):
        sync()
        t0 = time.perf_counter()
        torch.mm(a, b)
        sync()
        best = min(best, time.perf_counter() - t0)
    return 2 * args.gemm_size**3 / best


peak_start = gemm_peak()
print(f"fp32 GEMM {args.gemm_size}^2: {peak_start / 1e9:.1f} GFLOP/s (best of {args.gemm_repeats})")

# --------------------------------------------------------------- 3. the model: brief training, then variants
cfg = RerankConfig(max_tokens=args.max_tokens[0], score_batch_size=args.batch_size, seed=args.seed,
                   max_steps=max(args.train_steps, 1), batch_size=8, negatives=3, lr=args.train_lr)
if args.reranker:
    model = CrossEncoder.load(args.reranker, device=str(device))
    model.cfg.max_tokens, model.cfg.score_batch_size = args.max_tokens[0], args.batch_size
    args.backbone, args.train_steps = model.backbone, 0
else:
    model = CrossEncoder.from_config(args.backbone, cfg, device=str(device))
mcfg = model.model.config
n_layers, d_model = mcfg.num_hidden_layers, mcfg.hidden_size
d_ff = getattr(mcfg, "intermediate_size", None) or getattr(mcfg, "n_inner", None) or 4 * d_model
train_info: dict = {"steps": 0, "reranker": args.reranker}
if args.train_steps > 0:
    pos = np.array([hist[int(u)][-1] for u in train_users])
    pool = np.stack([np.random.default_rng([args.seed, 1, int(u)]).choice(ds.n_items, 50, replace=False,
                                                                           p=pop / pop.sum())
                     for u in train_users])
    ex = build_rerank_examples([user_text(int(u)) for u in train_users], pos, pool,
                               [hist[int(u)] for u in train_users], cfg, seed=args.seed, n_items=ds.n_items)
    t0 = time.perf_counter()
    res = train_cross_encoder(model, ex, items_txt, cfg, device=str(device))
    train_info = {"steps": res.steps, "first_loss": res.log[0]["loss"], "final_loss": res.final_loss,
                  "seconds": time.perf_counter() - t0}
    print(f"trained {res.steps} steps in {train_info['seconds']:.0f} s, loss {res.log[0]['loss']:.3f} -> "
          f"{res.final_loss:.3f}")
model.eval()
models = {"fp32": (model, 0), "fp32+cache": (model, model.item_cache_size)}
for v, mode in (("merged", "none"), ("int8", "int8"), ("bf16", "bf16")):
    if v in variants:
        models[v] = (model.for_scoring(mode), model.item_cache_size)


def use(variant: str, max_tokens: int) -> CrossEncoder:
    """The variant's model set to ``max_tokens`` with an empty item cache of the variant's size."""
    m, cache = models[variant]
    m.cfg.max_tokens, m.item_cache_size = max_tokens, cache
    m.pairs.clear_cache()
    return m


# ----------------------------------------------------------------------- 4. FLOPs of the batches score() runs
def seq_flops(s: np.ndarray | int) -> np.ndarray:
    s = np.asarray(s, dtype=np.float64)
    return n_layers * (2 * (4 * d_model**2 + 2 * d_model * d_ff) * s + 4 * s**2 * d_model)


def flops(m: CrossEncoder, u_txt: list[str], i_txt: list[str], per_user: int | None = None) -> dict:
    """Padded and useful model FLOPs of scoring these pairs (per user call when ``per_user``)."""
    _, lengths = m.pairs.encode_pairs(u_txt, i_txt)
    step = per_user or len(lengths)
    chunks = [lengths[i:i + step] for i in range(0, len(lengths), step)]
    padded = 0.0
    for c in chunks:
        srt = np.sort(c)[::-1]
        for start in range(0, len(srt), args.batch_size):
            batch = srt[start:start + args.batch_size]
            padded += len(batch) * float(seq_flops(batch[0]))
    return {"padded": padded, "useful": float(seq_flops(lengths).sum()), "mean_len": float(lengths.mean())}


# ------------------------------------------------------------------------------------------- 5. measuring
rows: list[dict] = []
quality: list[dict] = []
ref_scores: dict[tuple[int, int], np.ndarray] = {}
for mt in args.max_tokens:
    for v in variants:
        m = use(v, mt)
        for depth in args.depths:
            users = timed_users[:need[depth]]
            wu, wi = workload(warm_users[:math.ceil(args.warmup_pairs / depth)], depth)
            m.score(wu, wi)  # untimed: first-call costs, and it fills the item cache as earlier users would
            u_txt, i_txt = workload(users, depth)
            sync()
            t0 = time.perf_counter()
            scores = m.score(u_txt, i_txt)
            sync()
            wall = time.perf_counter() - t0
            lat = []
            for k, u in enumerate(lat_users):
                lu, li = workload(np.array([u]), depth)
                t1 = time.perf_counter()
                m.score(lu, li)
                sync()
                if k:  # the first user is untimed
                    lat.append(1e3 * (time.perf_counter() - t1))
            fl = flops(m, u_txt, i_txt)
            lat_fl = flops(m, *workload(lat_users[1:], depth), per_user=depth)
            row = {"max_tokens": mt, "variant": v, "depth": depth, "pairs": len(u_txt), "seconds": wall,
                   "pairs_per_s": len(u_txt) / wall, "latency_ms_median": float(np.median(lat)),
                   "latency_ms_p90": float(np.percentile(lat, 90)), "mean_tokens": fl["mean_len"],
                   "gflop_per_pair_padded": fl["padded"] / len(u_txt) / 1e9,
                   "achieved_gflops_padded": fl["padded"] / wall / 1e9,
                   "achieved_gflops_useful": fl["useful"] / wall / 1e9,
                   "latency_achieved_gflops": lat_fl["padded"] / (sum(lat) / 1e3) / 1e9}
            rows.append(row)
            key = (mt, depth)
            if v == "fp32":
                ref_scores[key] = scores
            ref = ref_scores[key].reshape(len(users), depth)
            got = scores.reshape(len(users), depth)
            rho = [spearmanr(a, b).statistic for a, b in zip(got, ref, strict=True)]
            top = min(10, depth)
            overlap = [len(set(np.argsort(-a)[:top]) & set(np.argsort(-b)[:top])) / top
                       for a, b in zip(got, ref, strict=True)]
            quality.append({"max_tokens": mt, "variant": v, "depth": depth, "top_k": top,
                            "spearman_mean": float(np.mean(rho)), "spearman_min": float(np.min(rho)),
                            "top_overlap": float(np.mean(overlap)),
                            "max_abs_diff": float(np.abs(got - ref).max())})
            print(f"max_tokens {mt} {v:>10} depth {depth:>3}: {row['pairs_per_s']:7.1f} pairs/s, latency "
                  f"{row['latency_ms_median']:7.1f} ms (p90 {row['latency_ms_p90']:.1f}), "
                  f"{row['achieved_gflops_padded']:.1f} GFLOP/s, spearman {np.mean(rho):.4f}", flush=True)

# ------------------------------------------------------------- 6. where the time goes: tokenise vs forward
GROUPS = (("GEMM (linear/matmul)", ("addmm", "aten::mm", "bmm", "matmul", "linear", "quantized", "mkldnn",
                                    "onednn", "fbgemm")),
          ("attention (sdpa)", ("attention", "softmax")),
          ("copy / cast / alloc", ("copy_", "aten::to", "contiguous", "clone", "empty", "_to_copy", "fill_")),
          ("elementwise + norm", ("gelu", "layer_norm", "add", "mul", "div", "where", "tanh", "sub",
                                  "masked_fill", "pow", "rsqrt", "mean")))


def group(name: str) -> str:
    for label, keys in GROUPS:
        if any(k in name for k in keys):
            return label
    return "other"


split: list[dict] = []
profiles: dict[str, dict[str, float]] = {}
mt0 = args.max_tokens[0]
for v in variants:
    m = use(v, mt0)
    u_txt, i_txt = workload(timed_users, deep)
    u_txt, i_txt = u_txt[:args.split_pairs], i_txt[:args.split_pairs]
    wu, wi = workload(warm_users, deep)
    m.score(wu[:args.split_pairs], wi[:args.split_pairs])  # warm the cache as in section 5
    t0 = time.perf_counter()
    batches = list(m._batches(u_txt, i_txt))
    t_tok = time.perf_counter() - t0
    with torch.inference_mode():
        m._run(batches[0][1])  # untimed
        sync()
        t0 = time.perf_counter()
        for _, enc in batches:
            m._run(enc)
        sync()
        t_fwd = time.perf_counter() - t0
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _, enc in batches:
                m._run(enc)
    fl = flops(m, u_txt, i_txt)
    n = len(u_txt)
    split.append({"variant": v, "max_tokens": mt0, "depth": deep, "pairs": n,
                  "tokenise_ms_per_pair": 1e3 * t_tok / n, "forward_ms_per_pair": 1e3 * t_fwd / n,
                  "tokenise_share": t_tok / (t_tok + t_fwd),
                  "forward_gflops_padded": fl["padded"] / t_fwd / 1e9})
    by: dict[str, float] = {}
    for e in prof.key_averages():
        by[group(e.key)] = by.get(group(e.key), 0.0) + e.self_cpu_time_total
    total = sum(by.values()) or 1.0
    profiles[v] = {k: by[k] / total for k in sorted(by, key=lambda k: -by[k])}

peak_end = gemm_peak()
peak = max(peak_start, peak_end)
print(f"fp32 GEMM again at the end: {peak_end / 1e9:.1f} GFLOP/s; peak used: {peak / 1e9:.1f} GFLOP/s")

# --------------------------------------------------------------------------------------------- 7. report
base = {(r["max_tokens"], r["depth"]): r for r in rows if r["variant"] == "fp32"}
lines = [f"## Reranker speed: {args.backbone}, {device}, {threads} torch threads, batch {args.batch_size}, "
         f"fp32 GEMM peak {peak / 1e9:.1f} GFLOP/s",
         "", "| max_tokens | variant | depth | pairs/s | vs fp32 | latency ms (median) | p90 | tokens/pair "
         "| GFLOP/pair (padded) | GFLOP/s padded | % of GEMM peak | useful % |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|"]
for r in rows:
    b = base[(r["max_tokens"], r["depth"])]
    lines.append(f"| {r['max_tokens']} | {r['variant']} | {r['depth']} | {r['pairs_per_s']:.1f} | "
                 f"{r['pairs_per_s'] / b['pairs_per_s']:.2f}x | {r['latency_ms_median']:.1f} | "
                 f"{r['latency_ms_p90']:.1f} | {r['mean_tokens']:.1f} | {r['gflop_per_pair_padded']:.3f} | "
                 f"{r['achieved_gflops_padded']:.1f} | "
                 f"{100 * r['achieved_gflops_padded'] * 1e9 / peak:.0f}% | "
                 f"{100 * r['achieved_gflops_useful'] * 1e9 / peak:.0f}% |")
lines += ["", "Quality against fp32 on the same pairs (per user):", "",
          "| max_tokens | variant | depth | Spearman mean | Spearman min | top-10 overlap | max abs diff |",
          "|---|---|---|---|---|---|---|"]
lines += [f"| {q['max_tokens']} | {q['variant']} | {q['depth']} | {q['spearman_mean']:.4f} | "
          f"{q['spearman_min']:.4f} | {q['top_overlap']:.3f} | {q['max_abs_diff']:.2e} |" for q in quality
          if q["variant"] != "fp32"]
lines += ["", f"Where the time goes (max_tokens {mt0}, depth {deep}, {split[0]['pairs']} pairs, cache warm):",
          "", "| variant | tokenise ms/pair | forward ms/pair | tokenise share | forward GFLOP/s "
          "| forward % of peak | "
          + " | ".join(label for label, _ in GROUPS) + " | other |",
          "|---|---|---|---|---|---|" + "---|" * (len(GROUPS) + 1)]
for s in split:
    p = profiles[s["variant"]]
    lines.append(f"| {s['variant']} | {s['tokenise_ms_per_pair']:.3f} | {s['forward_ms_per_pair']:.2f} | "
                 f"{100 * s['tokenise_share']:.1f}% | {s['forward_gflops_padded']:.1f} | "
                 f"{100 * s['forward_gflops_padded'] * 1e9 / peak:.0f}% | "
                 + " | ".join(f"{100 * p.get(label, 0.0):.0f}%" for label, _ in GROUPS)
                 + f" | {100 * p.get('other', 0.0):.0f}% |")
lines += ["", f"FLOPs: layers x (2 x (4 d^2 + 2 d d_ff) x S + 4 x S^2 x d), {n_layers} layers, d={d_model}, "
          f"d_ff={d_ff}; padded = batch width, useful = real lengths; int8 rows count int8 ops. "
          f"GEMM peak: torch.mm {args.gemm_size}^2 float32, {peak_start / 1e9:.1f} GFLOP/s at the start, "
          f"{peak_end / 1e9:.1f} at the end. Profile shares are self CPU time of the forward passes."]
print("\n" + "\n".join(lines))
atomic_write_json(args.out, {
    "args": vars(args), "when": datetime.now(timezone.utc).isoformat(),
    "machine": {"torch": torch.__version__, "threads": threads, "cpus": os.cpu_count(), "device": str(device),
                "processor": platform.processor(), "gemm_gflops_start": peak_start / 1e9,
                "gemm_gflops_end": peak_end / 1e9, "gemm_gflops_peak": peak / 1e9},
    "model": {"backbone": args.backbone, "layers": n_layers, "d": d_model, "d_ff": d_ff,
              "lora_r": model.cfg.lora_r, "batch_size": args.batch_size},
    "train": train_info, "results": rows, "quality": quality, "split": split, "profile": profiles,
    "load_average": {"start": load_start, "end": os.getloadavg()}, "table": lines})
print(f"\nwrote {args.out}")

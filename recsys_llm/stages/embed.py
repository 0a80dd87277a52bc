"""Stage ``embed``: every catalog item and every user (test-time history) through the encoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recsys_llm.artifacts import encoder_identity, load_encoder
from recsys_llm.encoder.model import TwoTowerEncoder
from recsys_llm.encoder.onnx_encoder import TextEncoder
from recsys_llm.io_utils import atomic_save_npy, atomic_write_json
from recsys_llm.run import Context, read_parquet, timed
from recsys_llm.text.templates import item_texts


@timed("embed")
def embed(run_dir: str | Path, zero_shot: bool = False, backend: str | None = None) -> None:
    """Encode every catalog item and every user (test-time history) with the fine-tuned or untuned encoder.

    Writes ``embeddings[_zeroshot]/`` (``item_emb.npy``, ``item_ids.npy``, ``user_emb.npy``, ``user_ids.npy``,
    ``embeddings.json`` with the encoder identity and data fingerprint). Items added after ``prepare``
    (``coldstart/``) are re-embedded too, so a rebuilt index matches the encoder. ``backend`` overrides the
    run's ``encoder.backend`` (``onnx``: the exported graph; ``embeddings.json`` records it).
    """
    ctx = Context.load(run_dir)
    cfg = ctx.cfg
    encoder: TextEncoder
    if zero_shot:
        encoder = TwoTowerEncoder.from_config(cfg.encoder, lora=False, device=cfg.train.device)
    else:
        encoder = load_encoder(ctx.run, cfg.train.device, backend)
    out = ctx.run.embeddings(zero_shot)
    item_emb = encoder.encode_items(ctx.item_texts(), cfg.text.item_max_tokens)
    user_emb = encoder.encode_users(ctx.user_texts(), cfg.text.user_max_tokens)
    atomic_save_npy(out / "item_emb.npy", item_emb)
    atomic_save_npy(out / "item_ids.npy", np.arange(len(item_emb), dtype=np.int64))
    atomic_save_npy(out / "user_emb.npy", user_emb)
    atomic_save_npy(out / "user_ids.npy", np.arange(len(user_emb), dtype=np.int64))
    cold_rows = ctx.run.coldstart / "items.parquet"
    if not zero_shot and cold_rows.exists():  # cold-start items follow the encoder, so a rebuilt index matches
        rows = read_parquet(ctx.run, cold_rows, "coldstart add-items")
        atomic_save_npy(ctx.run.coldstart / "item_emb.npy",
                        encoder.encode_items(item_texts(rows, cfg.text.item_template), cfg.text.item_max_tokens))
    fp = {"zero_shot": zero_shot, "encoder": encoder_identity(encoder, cfg, zero_shot), "dim": encoder.dim,
          "data_fingerprint": ctx.ds.fingerprint(), "n_items": len(item_emb), "n_users": len(user_emb)}
    atomic_write_json(out / "embeddings.json", fp)

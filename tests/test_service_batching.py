"""Micro-batching: concurrent requests that need the encoder share forward passes, and the service keeps
answering while an item batch is encoded."""

from __future__ import annotations

import asyncio
import shutil
import time

import pytest

httpx = pytest.importorskip("httpx", reason="pip install -e '.[dev]' for the service tests")
pytest.importorskip("fastapi", reason="pip install -e '.[serve]' for the service")

from recsys_llm.serve.app import create_app  # noqa: E402


@pytest.fixture(scope="module")
def app(tiny_run, tmp_path_factory):
    run = tmp_path_factory.mktemp("batching") / "run"
    shutil.copytree(tiny_run, run)
    return create_app(run, window_ms=20)


def _client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://service")


def test_concurrent_free_text_users_are_encoded_in_few_batches(app):
    svc = app.state.service
    svc.rec.encoder  # noqa: B018 - loaded before timing

    async def go() -> list[int]:
        async with _client(app) as c:
            rs = await asyncio.gather(*[c.post("/recommend/anonymous", json={"text": f"space rocket {i}", "k": 3})
                                        for i in range(16)])
        return [r.status_code for r in rs]

    before, sizes = svc.users.batches, len(svc.users.sizes)
    assert asyncio.run(go()) == [200] * 16
    batches = svc.users.batches - before
    assert 1 <= batches < 16 and sum(svc.users.sizes[sizes:]) == 16
    assert not svc.rec.text_vectors  # the pre-encoded texts are released after each answer


def test_the_service_answers_while_items_are_encoded(app):
    svc = app.state.service
    real = svc.items.fn

    def slow(texts):
        time.sleep(1.0)  # a big batch on a slow machine
        return real(texts)

    svc.items.fn = slow
    items = [{"item_id": f"batch-{i}", "title": f"Item {i} cooking", "genres": "cooking"} for i in range(50)]

    async def go() -> tuple[float, float, int]:
        async with _client(app) as c:
            t0 = time.perf_counter()
            add = asyncio.create_task(c.post("/items", json={"items": items}))
            await asyncio.sleep(0.1)
            r = await c.post("/recommend", json={"user_id": "u1", "k": 5, "rerank": False})
            answered = time.perf_counter() - t0
            assert r.status_code == 200
            done = await add
            return answered, time.perf_counter() - t0, done.status_code

    try:
        answered, added, status = asyncio.run(go())
    finally:
        svc.items.fn = real
    assert status == 200 and added >= 1.0 and answered < 0.8, (answered, added)
    assert len(svc.rec.catalogue.index.ids) == 80


def test_concurrent_reranked_requests_share_cross_encoder_passes(app):
    svc = app.state.service
    assert svc.rec.served.reranks  # the tiny run serves hybrid -> rerank

    async def go() -> list[dict]:
        async with _client(app) as c:
            rs = await asyncio.gather(*[c.post("/recommend", json={"user_id": f"u{i}", "k": 4}) for i in range(12)])
        return [r.json() for r in rs]

    before = svc.cross.batches
    got = asyncio.run(go())
    assert 1 <= svc.cross.batches - before < 12
    for i, body in enumerate(got):  # each list is what Recommender.recommend ranks for that user alone
        alone = svc.live.recommend(f"u{i}", 4)
        assert [it["item_id"] for it in body["items"]] == alone["item_id"].tolist()
        assert body["stage"] == svc.rec.served.label

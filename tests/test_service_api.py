"""The HTTP service through FastAPI's TestClient on the tiny run: every endpoint, bad input, unknown ids."""

from __future__ import annotations

import shutil

import pytest

pytest.importorskip("fastapi", reason="pip install -e '.[serve]' for the service")
from fastapi.testclient import TestClient  # noqa: E402

from recsys_llm.serve.app import create_app  # noqa: E402


@pytest.fixture(scope="module")
def client(tiny_run, tmp_path_factory):
    run = tmp_path_factory.mktemp("service") / "run"
    shutil.copytree(tiny_run, run)
    with TestClient(create_app(run)) as c:
        yield c


def _ids(resp) -> list[str]:
    assert resp.status_code == 200, resp.text
    return [it["item_id"] for it in resp.json()["items"]]


def test_status_endpoints_and_docs(client):
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["live_items"] == 30 and h["known_users"] == 40
    assert client.get("/ready").json() == {"ready": True}
    assert client.get("/docs").status_code == 200
    assert "/recommend" in client.get("/openapi.json").json()["paths"]
    assert "<html" in client.get("/").text.lower()


def test_recommend_known_user_with_k_exclude_filters_and_explanations(client):
    body = client.post("/recommend", json={"user_id": "u1", "k": 5}).json()
    assert len(body["items"]) == 5 and body["stage"]
    assert all(it["because"] for it in body["items"])  # "because you liked ..." per item
    history = {it["item_id"] for it in client.get("/users/u1").json()["history"]}
    assert not history & {it["item_id"] for it in body["items"]}  # seen items are not recommended
    first = body["items"][0]["item_id"]
    assert first not in _ids(client.post("/recommend", json={"user_id": "u1", "k": 5, "exclude": [first]}))
    space = _ids(client.post("/recommend", json={"user_id": "u1", "k": 3, "rerank": False,
                                                 "filters": {"genres": {"contains": "space"}}}))
    assert len(space) == 3 and all(int(i) % 2 == 0 for i in space)  # even items are the space ones
    none = client.post("/recommend", json={"user_id": "u1", "filters": {"year": {"min": 3000}}}).json()
    assert none["items"] == []


@pytest.mark.parametrize("body, field", [
    ({"user_id": "u1", "k": 0}, "body.k"),
    ({"user_id": "u1", "k": "ten"}, "body.k"),
    ({"user_id": ""}, "body.user_id"),
    ({"k": 3}, "body.user_id"),
    ({"user_id": "u1", "exclude": "100"}, "body.exclude"),
    ({"user_id": "u1", "colour": "red"}, "body.colour"),
])
def test_bad_recommend_requests_get_422_naming_the_field(client, body, field):
    r = client.post("/recommend", json=body)
    assert r.status_code == 422 and field in r.json()["detail"], r.text


def test_bad_values_and_unknown_ids(client):
    r = client.post("/recommend", json={"user_id": "u1", "filters": {"colour": "red"}})
    assert r.status_code == 422 and "unknown column 'colour'" in r.json()["detail"]
    r = client.post("/recommend", json={"user_id": "nobody"})
    assert r.status_code == 404 and "not known" in r.json()["detail"] and "items" in r.json()["detail"]
    r = client.post("/recommend", json={"user_id": "u1", "exclude": ["nope"]})
    assert r.status_code == 404 and "nope" in r.json()["detail"]
    assert client.get("/items/nope/similar").status_code == 404
    assert client.get("/users/nobody").status_code == 404
    assert client.post("/recommend/anonymous", json={"items": ["nope"]}).status_code == 404
    r = client.post("/recommend/anonymous", json={})
    assert r.status_code == 422 and "text" in r.json()["detail"]
    assert client.post("/recommend", content=b"{not json", headers={"content-type": "application/json"}
                       ).status_code == 422
    assert client.get("/search", params={"q": ""}).status_code == 422
    r = client.post("/items", json={"items": [{"item_id": "x", "title": "  "}]})
    assert r.status_code == 422 and "title" in r.json()["detail"]
    r = client.post("/interactions", json={"events": [{"user_id": "u1", "item_id": "nope"}]})
    assert r.status_code == 404 and "nope" in r.json()["detail"]


def test_anonymous_similar_and_search(client):
    from_items = _ids(client.post("/recommend/anonymous", json={"items": ["100", "102"], "k": 4}))
    assert len(from_items) == 4 and not {"100", "102"} & set(from_items)
    assert len(_ids(client.post("/recommend/anonymous", json={"text": "space rocket", "k": 3}))) == 3
    both = client.post("/recommend/anonymous", json={"items": ["100"], "text": "space", "k": 3}).json()
    assert both["items"][0]["because_item_id"] == "100"
    similar = _ids(client.get("/items/100/similar", params={"k": 5}))
    assert len(similar) == 5 and "100" not in similar
    assert len(_ids(client.get("/search", params={"q": "cooking recipe", "k": 4}))) == 4


def test_live_catalogue_and_feedback(client):
    item = {"item_id": "new-space", "title": "Item 98 space", "genres": "space rocket astronaut",
            "description": "astronauts fly a rocket to space"}
    r = client.post("/items", json={"items": [item]})
    assert r.status_code == 200 and r.json()["added"] == ["new-space"] and r.json()["live_items"] == 31
    assert client.post("/items", json={"items": [item]}).status_code == 422  # already there: upsert needed
    assert client.post("/items", json={"items": [{**item, "title": "Item 98 space (new cut)"}], "upsert": True}
                       ).status_code == 200
    search = client.get("/search", params={"q": "Item 98 space (new cut)", "k": 31}).json()["items"]
    assert any(it["item_id"] == "new-space" and "new cut" in it["title"] for it in search)
    assert "new-space" in _ids(client.post("/recommend", json={"user_id": "u0", "k": 5, "rerank": False,
                                                             "filters": {"title": "Item 98"}}))
    r = client.post("/interactions", json={"events": [{"user_id": "u0", "item_id": "new-space", "rating": 5},
                                                      {"user_id": "fresh", "item_id": "100"}]})
    assert r.json() == {"interactions": 2, "new_users": 1}
    assert "new-space" in {it["item_id"] for it in client.get("/users/u0").json()["history"]}
    assert "new-space" not in _ids(client.post("/recommend", json={"user_id": "u0", "k": 30}))  # now seen
    fresh = client.post("/recommend", json={"user_id": "fresh", "k": 3}).json()
    assert len(fresh["items"]) == 3 and fresh["items"][0]["because_item_id"] == "100"
    done = client.post("/refresh").json()
    assert done["interactions_folded"] == 2 and done["items_with_new_counts"] == 2 and "collaborative" in done
    assert client.post("/refresh").json()["interactions_folded"] == 0
    assert _ids(client.post("/recommend", json={"user_id": "fresh", "k": 3})) == [i["item_id"] for i in fresh["items"]]
    assert client.post("/items/retire", json={"items": ["new-space"]}).status_code == 200
    assert "new-space" not in _ids(client.get("/search", params={"q": "Item 98 space", "k": 30}))
    assert client.post("/items/retire", json={"items": ["new-space"]}).status_code == 422  # already retired


def test_metrics_count_requests_per_endpoint(client):
    client.post("/recommend", json={"user_id": "u2", "k": 2})
    text = client.get("/metrics").text
    assert 'recsys_requests_total{endpoint="/recommend",method="POST",status="200"}' in text
    assert 'recsys_request_seconds_bucket{endpoint="/recommend"' in text
    assert "recsys_catalogue_live_items" in text and "recsys_known_users" in text


def test_refresh_command_folds_what_the_service_received(client, capsys):
    from recsys_llm.cli import main

    assert client.post("/interactions", json={"events": [{"user_id": "u5", "item_id": "101"}]}).status_code == 200
    assert client.get("/health").json()["interactions_since_refresh"] == 1
    run = client.app.state.service.rec.run.root
    capsys.readouterr()
    assert main(["refresh", "--run-dir", str(run)]) == 0
    out = capsys.readouterr().out
    assert "folded 1 interactions (1 items)" in out and "collaborative" in out
    assert client.get("/health").json()["interactions_since_refresh"] == 0  # the running service applied it

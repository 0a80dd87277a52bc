"""The unisrec loader: UniSRec/RecBole atomic files written here the way UniSRec writes them; the published
split is reproduced exactly, histories cut to the last L items are rebuilt whole."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys_llm.cli import main
from recsys_llm.config import DataConfig, SplitConfig
from recsys_llm.data.io import DataError, load_dataset
from recsys_llm.data.schema import Dataset
from recsys_llm.data.splits import histories, make_split

SEQS = {  # user -> items, oldest first; repeats on purpose (AU3 bought B5 three times, its test item too)
    "AU1": ["B1", "B2", "B3", "B4", "B5", "B6", "B2"],
    "AU2": ["B3", "B1", "B7"],
    "AU3": ["B5", "B5", "B6", "B5"],
    "AU4": ["B7", "B6", "B5", "B4", "B3", "B2", "B1", "B7"],
}
HEADER = "user_id:token\titem_id_list:token_seq\titem_id:token\n"


def write_unisrec(folder: Path, name: str = "Tiny", max_len: int = 3, indices: bool = True,
                  remap: bool = True, gz: bool = False, seqs: dict[str, list[str]] | None = None,
                  texts: dict[str, str] | None = None) -> Path:
    """Atomic files as UniSRec's process_amazon.py writes them (indices in .inter, tokens in .text); ``seqs``
    (default ``SEQS``) and ``texts`` (item token -> text; default one gadget line per item) as given."""
    folder.mkdir(parents=True, exist_ok=True)
    seqs = SEQS if seqs is None else seqs
    items = sorted({i for s in seqs.values() for i in s})
    i2x = {t: str(k + 1) for k, t in enumerate(items)}
    u2x = {u: str(k + 1) for k, u in enumerate(seqs)}
    item_id = (lambda t: i2x[t]) if indices else (lambda t: t)
    user_id = (lambda u: u2x[u]) if indices else (lambda u: u)
    lines = {"train": [HEADER], "valid": [HEADER], "test": [HEADER]}
    for u, seq in seqs.items():
        s, uid = [item_id(t) for t in seq], user_id(u)
        train = s[:-2]
        for k in range(1, len(train)):  # longest history first, each cut to the last max_len items
            lines["train"].append(f"{uid}\t{' '.join(train[:-k][-max_len:])}\t{train[-k]}\n")
        lines["valid"].append(f"{uid}\t{' '.join(train[-max_len:])}\t{s[-2]}\n")
        lines["test"].append(f"{uid}\t{' '.join((train + [s[-2]])[-max_len:])}\t{s[-1]}\n")
    files = {f"{name}.{part}.inter": "".join(text) for part, text in lines.items()}
    texts = texts or {t: f'The "{t}" gadget. Tools Drills. Acme.' for t in items}
    files[f"{name}.text"] = "item_id:token\ttext:token_seq\n" + "".join(f"{t}\t{texts[t]}\n" for t in items)
    if remap:
        files[f"{name}.item2index"] = "".join(f"{t}\t{x}\n" for t, x in i2x.items())
        files[f"{name}.user2index"] = "".join(f"{u}\t{x}\n" for u, x in u2x.items())
    for file, text in files.items():
        if gz:
            (folder / f"{file}.gz").write_bytes(gzip.compress(text.encode()))
        else:
            (folder / file).write_text(text)
    return folder


def _per_user(ds: Dataset, split) -> dict[str, tuple[list[str], str, str]]:
    ext_u, ext_i = ds.users["user_id"].to_numpy(), ds.items["item_id"].to_numpy()
    train = histories(split.train, ds.n_users)
    valid = dict(zip(split.valid["user"], split.valid["item"], strict=True))
    test = dict(zip(split.test["user"], split.test["item"], strict=True))
    return {ext_u[u]: (list(ext_i[train[u]]), ext_i[valid[u]], ext_i[test[u]]) for u in range(ds.n_users)}


@pytest.mark.parametrize(("max_len", "gz"), [(3, False), (50, True)])
def test_published_split_is_reproduced_exactly(tmp_path, max_len, gz):
    ds = load_dataset(DataConfig(dataset="unisrec", path=str(write_unisrec(tmp_path / "d", max_len=max_len, gz=gz))))
    assert ds.users["user_id"].tolist() == sorted(SEQS) and ds.items["item_id"].tolist()[0] == "B1"  # tokens
    split = make_split(ds, SplitConfig(cold_item_fraction=0.0))
    got = _per_user(ds, split)
    assert got == {u: (s[:-2], s[-2], s[-1]) for u, s in SEQS.items()}  # whole histories, the files' targets
    assert len(split.train) + len(split.valid) + len(split.test) == sum(map(len, SEQS.values()))
    assert ds.items.loc[0, "title"] == ds.items.loc[0, "description"] == 'The "B1" gadget. Tools Drills. Acme.'


@pytest.mark.parametrize(("indices", "remap"), [(True, False), (False, True), (False, False)])
def test_ids_with_and_without_index_maps(tmp_path, indices, remap):
    folder = write_unisrec(tmp_path / "d", indices=indices, remap=remap)
    if indices and not remap:  # indices everywhere, the text keyed by index too
        text = folder / "Tiny.text"
        items = sorted({i for s in SEQS.values() for i in s})
        text.write_text("item_id:token\ttext:token_seq\n" + "".join(f"{k + 1}\t{t} text\n" for k, t in enumerate(items)))
    ds = load_dataset(DataConfig(dataset="unisrec", path=str(folder)))
    assert (ds.items["title"] != "").all() and ds.n_items == 7 and ds.n_users == 4
    split = make_split(ds, SplitConfig(cold_item_fraction=0.0))
    assert len(split.test) == 4 and len(split.valid) == 4


def test_split_via_prepare_and_saved_holdout(tmp_path, capsys):
    folder = write_unisrec(tmp_path / "d")
    run = tmp_path / "run"
    assert main(["prepare", "--dataset", "unisrec", "--path", str(folder), "--run-dir", str(run),
                 "--cold-item-fraction", "0"]) == 0, capsys.readouterr().err
    ds = Dataset.load(run / "data")
    assert ds.holdout is not None and ds.holdout["test_item_id"].tolist() == [s[-1] for s in SEQS.values()]
    test = pd.read_parquet(run / "splits" / "test.parquet")
    assert ds.items["item_id"].to_numpy()[test["item"]].tolist() == [SEQS[u][-1] for u in ds.users["user_id"]]
    texts = [json.loads(line)["text"] for line in (run / "text" / "items.jsonl").read_text().splitlines()]
    assert texts[0] == 'The "B1" gadget. Tools Drills. Acme.'  # title = description: rendered once
    assert json.loads((run / "config.json").read_text())["text"]["item_template"] == "title_description"


def test_cold_items_with_the_published_split(tmp_path, caplog):
    ds = load_dataset(DataConfig(dataset="unisrec", path=str(write_unisrec(tmp_path / "d"))))
    with caplog.at_level(logging.WARNING, logger="recsys_llm.data.holdout"):
        split = make_split(ds, SplitConfig(cold_item_fraction=0.3, seed=0))  # B5, B6 cold
    cold = set(split.cold_items.tolist())
    assert cold and not cold & (set(split.test["item"]) | set(split.valid["item"]) | set(split.train["item"]))
    assert len(split.test) < len(SEQS)  # users whose published test item went cold have no test row
    assert "set split.cold_item_fraction=0 to reproduce the split exactly" in caplog.text


def test_folder_with_two_data_sets(tmp_path):
    folder = write_unisrec(tmp_path / "d", name="Office")
    write_unisrec(folder, name="Arts")
    with pytest.raises(DataError, match=r"several data sets \(Arts, Office\); point data.path at one of them"):
        load_dataset(DataConfig(dataset="unisrec", path=str(folder)))
    ds = load_dataset(DataConfig(dataset="unisrec", path=str(folder / "Arts")))
    assert ds.sources[0].endswith("Arts.train.inter")


def test_bad_atomic_files(tmp_path):
    folder = write_unisrec(tmp_path / "d")
    valid = folder / "Tiny.valid.inter"
    good = valid.read_text()
    valid.write_text(good.replace("1\t3 4 5\t6\n", "1\t3 9 5\t6\n"))  # AU1's history no longer matches train
    with pytest.raises(DataError, match=r"Tiny\.valid\.inter: row 2: the history of user '1' \(3 9 5"):
        load_dataset(DataConfig(dataset="unisrec", path=str(folder)))
    valid.write_text(good + good.splitlines(keepends=True)[1])
    with pytest.raises(DataError, match=r"Tiny\.valid\.inter: row 6: user '1' has a second line"):
        load_dataset(DataConfig(dataset="unisrec", path=str(folder)))
    valid.write_text(good.replace("item_id_list:token_seq", "items:token_seq"))
    with pytest.raises(DataError, match=r"Tiny\.valid\.inter: missing required column 'item_id_list'"):
        load_dataset(DataConfig(dataset="unisrec", path=str(folder)))
    valid.unlink()
    with pytest.raises(DataError, match=r"missing Tiny\.valid\.inter"):
        load_dataset(DataConfig(dataset="unisrec", path=str(folder)))
    with pytest.raises(DataError, match=r"no NAME\.test\.inter file"):
        load_dataset(DataConfig(dataset="unisrec", path=str(tmp_path)))


def test_end_to_end_on_a_unisrec_fixture(tmp_path, tiny_bert_path, capsys):
    """prepare -> finetune -> embed -> index -> evaluate through the CLI on UniSRec atomic files: the published
    split is what the report evaluates (one test item per user, full ranking over the catalogue)."""
    rng = np.random.default_rng(0)
    seqs = {f"AU{u}": [f"B{i}" for i in rng.choice(np.arange(u % 2, 30, 2), 8, replace=False)] for u in range(40)}
    topics = ("space rocket astronaut", "cooking recipe kitchen")
    texts = {f"B{i}": f"Item {i}. {topics[i % 2]}. Brand{i % 5}." for i in range(30)}
    folder = write_unisrec(tmp_path / "d", max_len=50, seqs=seqs, texts=texts)
    run = str(tmp_path / "run")
    tiny = ["--set", f"encoder.backbone={tiny_bert_path}", "--set", "train.max_steps=4", "--set", "train.batch_size=8",
            "--set", "train.device=cpu", "--set", "text.user_max_tokens=32", "--set", "text.item_max_tokens=16",
            "--set", "rerank.enabled=false", "--set", "hybrid.enabled=false", "--set", "eval.sasrec_epochs=1"]
    assert main(["prepare", "--dataset", "unisrec", "--path", str(folder), "--run-dir", run,
                 "--cold-item-fraction", "0", *tiny]) == 0, capsys.readouterr().err
    for stage in (["finetune"], ["embed"], ["index", "build"], ["evaluate"]):
        assert main([*stage, "--run-dir", run]) == 0, (stage, capsys.readouterr().err)
    rows = json.loads((tmp_path / "run" / "report.json").read_text())["rows"]
    warm = {r["model"]: r for r in rows if r["slice"] == "warm"}
    ds = Dataset.load(tmp_path / "run" / "data")
    assert ds.holdout["test_item_id"].tolist() == [s[-1] for s in seqs.values()]  # the published test items
    assert {"served", "EASE", "BM25 (item text)", "SASRec"} <= set(warm)
    assert warm["served"]["note"].startswith("dense")  # the fine-tuned encoder, served as it was measured
    for row in warm.values():
        assert row["metrics"]["users"] == 40 and 0.0 <= row["metrics"]["NDCG@10"] <= 1.0
    assert warm["EASE"]["metrics"]["NDCG@10"] > warm["random"]["metrics"]["NDCG@10"]  # the structure is learnable

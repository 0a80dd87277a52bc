"""Tags from the training period only (recsys_llm.data.tags): no test-period tags, none on cold items."""

from __future__ import annotations

import numpy as np

from recsys_llm.config import DataConfig, SplitConfig
from recsys_llm.data.io import load_dataset
from recsys_llm.data.splits import make_split
from recsys_llm.data.tags import training_tags

MOVIES = "movieId,title,genres\n" + "".join(f"{i},Movie {i} (2000),Drama\n" for i in range(1, 7))
# users 1..4 each rate movies 1..6 in order at t = 10u + i: leave-last-out gives 5 and 6 to valid / test
RATINGS = "userId,movieId,rating,timestamp\n" + "".join(
    f"{u},{i},4.0,{10 * u + i}\n" for u in range(1, 5) for i in range(1, 7))
TAGS = ("userId,movieId,tag,timestamp\n"
        "1,1,early,11\n"      # user 1's training period (last training interaction at 14): kept
        "1,1,late,16\n"       # written at the user's test time: leaks the future, dropped
        "2,2,Seen,22\n"       # kept
        "9,3,ghost,1\n"       # a user with no interactions: no training period, dropped
        "3,4,before,34\n")    # kept (34 = user 3's last training interaction)


def _dataset(tmp_path):
    for name, text in {"movies.csv": MOVIES, "ratings.csv": RATINGS, "tags.csv": TAGS}.items():
        (tmp_path / name).write_text(text)
    return load_dataset(DataConfig(dataset="ml-latest", path=str(tmp_path)))


def test_tags_come_from_training_rows_only(tmp_path):
    ds = _dataset(tmp_path)
    assert ds.items["tags"].tolist()[:4] == ["early, late", "seen", "ghost", "before"]  # the loader: every row
    split = make_split(ds, SplitConfig(kind="leave_last_out", cold_item_fraction=0.0))
    assert training_tags(ds, split).tolist() == ["early", "seen", "", "before", "", ""]


def test_cold_items_get_no_tags(tmp_path):
    ds = _dataset(tmp_path)
    split = make_split(ds, SplitConfig(kind="leave_last_out", cold_item_fraction=0.34, seed=3))
    tags = training_tags(ds, split)
    cold = np.asarray(split.cold_items)
    assert len(cold) and (tags[cold] == "").all()
    # warm items keep only rows of their users' (shorter, once cold items are gone) training periods
    assert training_tags(ds, split)[0] == ("" if 0 in cold else "early")
    assert set(tags) <= {"", "early", "seen", "before"}


def test_prepare_writes_training_tags(tmp_path):
    from recsys_llm.config import PipelineConfig
    from recsys_llm.stages.prepare import prepare

    _dataset(tmp_path)
    cfg = PipelineConfig().override({"data.dataset": "ml-latest", "data.path": str(tmp_path),
                                     "data.min_item_interactions": 0, "split.cold_item_fraction": 0.0})
    ctx = prepare(cfg, tmp_path / "run")
    assert "late" not in " ".join(ctx.ds.items["tags"]) and "ghost" not in " ".join(ctx.ds.items["tags"])

"""Every config value is checked against its declared type on every path, with one clear error.

Paths: the CLI's ``--set``, a ``--config`` file, a run's hand-edited ``config.json`` read by a later stage,
``PipelineConfig.override`` and building a section directly. Each malformed value below goes down each path.
"""

from __future__ import annotations

import dataclasses
import doctest
import importlib
import json

import pytest

from recsys_llm.cli import commands, main
from recsys_llm.config import (
    MILVUS_TOKEN_ENV,
    SECTIONS,
    ConfigError,
    EvalConfig,
    IndexConfig,
    PipelineConfig,
    TrainConfig,
    parse_overrides,
)
from recsys_llm.config.checks import example, field_types, mask_secrets, show

# (dotted key, value as parsed from --set / read from JSON, the declared type the error must name)
MALFORMED = [
    ("train.max_steps", "abc", "int"),
    ("train.max_steps", True, "int"),
    ("train.max_steps", 2.5, "int"),
    ("train.batch_size", 3.0, "int"),
    ("train.seed", -1.5, "int"),
    ("train.lr", "fast", "float"),
    ("train.lr", True, "float"),
    ("train.temperature", None, "float"),
    ("train.logq_correction", 1, "bool"),
    ("train.compile", "yes", "bool"),
    ("train.device", None, "str"),
    ("train.mixed_precision", None, "str"),
    ("data.dataset", None, "str"),
    ("data.on_bad_rows", None, "str"),
    ("data.min_rating", "high", "float | None"),
    ("data.min_rating", True, "float | None"),
    ("split.cold_item_fraction", "none", "float"),
    ("split.seed", 0.5, "int"),
    ("split.temporal_test_fraction", [0.1], "float"),
    ("text.user_max_items", "20x", "int"),
    ("text.user_max_tokens", 64.0, "int"),
    ("text.item_max_tokens", False, "int"),
    ("encoder.lora_r", "sixteen", "int"),
    ("encoder.lora_alpha", 32.5, "int"),
    ("encoder.lora_dropout", "0.1x", "float"),
    ("encoder.target_modules", "query", "list[str] | None"),
    ("encoder.target_modules", [1, 2], "list[str] | None"),
    ("encoder.backbone", None, "str"),
    ("index.nprobe", "auto", "int"),
    ("index.shard", "no", "bool"),
    ("index.float16", 0, "bool"),
    ("index.memory_budget_gb", "4GB", "float"),
    ("index.target_recall", [0.9], "float"),
    ("rerank.depth", 20.0, "int"),
    ("rerank.enabled", "on", "bool"),
    ("rerank.fusion_weight", None, "float"),
    ("rerank.sweep_depths", 10, "list[int]"),
    ("rerank.sweep_depths", [10, "a"], "list[int]"),
    ("rerank.sweep_weights", [0.5, True], "list[float]"),
    ("eval.ks", 10, "list[int]"),
    ("eval.ks", [10, 2.5], "list[int]"),
    ("eval.ks", None, "list[int]"),
    ("eval.baselines", "ease", "list[str]"),
    ("eval.n_bootstrap", "many", "int"),
    ("eval.max_users", 1000.0, "int"),
    ("hybrid.weights", 0.5, "list[float]"),
    ("hybrid.few_shot", [0, 1.5], "list[int]"),
    ("hybrid.bridge_neighbours", True, "int"),
    ("hybrid.enabled", 1, "bool"),
    ("hybrid.cf_confidences", ["a"], "list[float]"),
]
IDS = [f"{key}={show(value)}" for key, value, _ in MALFORMED]


def _set_arg(key: str, value) -> str:
    """The ``--set`` text a user would type for ``value``."""
    return f"{key}={value if isinstance(value, str) else json.dumps(value)}"


def _assert_names(message: str, key: str, value, declared: str) -> None:
    assert f"{key}={show(value)}" in message, message
    assert f"expected {declared}," in message and "e.g. --set " in message, message


def _assert_cli_error(err: str, out: str) -> str:
    assert err.startswith("error: ") and "Traceback" not in err + out, err
    return err


def _section(key: str):
    section, _, name = key.partition(".")
    return SECTIONS[section], name


# ------------------------------------------------------------------------------------ the four paths
@pytest.mark.parametrize(("key", "value", "declared"), MALFORMED, ids=IDS)
def test_cli_set_with_a_wrong_type_is_an_error_and_creates_nothing(tmp_path, capsys, key, value, declared):
    run = tmp_path / "run"
    assert main(["prepare", "--run-dir", str(run), "--set", _set_arg(key, value)]) == 2
    captured = capsys.readouterr()
    _assert_names(_assert_cli_error(captured.err, captured.out), key, value, declared)
    assert not run.exists()


@pytest.mark.parametrize(("key", "value", "declared"), MALFORMED, ids=IDS)
def test_config_file_with_a_wrong_type_is_an_error_naming_the_file(tmp_path, capsys, key, value, declared):
    section, _, name = key.partition(".")
    cfg_file = tmp_path / "recipe.json"
    cfg_file.write_text(json.dumps({section: {name: value}}))
    run = tmp_path / "run"
    assert main(["prepare", "--run-dir", str(run), "--config", str(cfg_file)]) == 2
    captured = capsys.readouterr()
    err = _assert_cli_error(captured.err, captured.out)
    assert f"{cfg_file}: " in err
    _assert_names(err, key, value, declared)
    assert not run.exists()


@pytest.mark.parametrize(("key", "value", "declared"), MALFORMED, ids=IDS)
def test_hand_edited_run_config_is_an_error_in_a_later_stage(tmp_path, capsys, key, value, declared):
    section, _, name = key.partition(".")
    PipelineConfig().save(tmp_path / "config.json")
    d = json.loads((tmp_path / "config.json").read_text())
    d[section][name] = value
    (tmp_path / "config.json").write_text(json.dumps(d))
    assert main(["finetune", "--run-dir", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    err = _assert_cli_error(captured.err, captured.out)
    assert f"{tmp_path / 'config.json'}: " in err
    _assert_names(err, key, value, declared)


@pytest.mark.parametrize(("key", "value", "declared"), MALFORMED, ids=IDS)
def test_python_api_raises_config_error(key, value, declared):
    cls, name = _section(key)
    with pytest.raises(ConfigError) as direct:
        cls(**{name: value})
    _assert_names(str(direct.value), key, value, declared)
    with pytest.raises(ConfigError) as override:
        PipelineConfig().override({key: value})
    assert str(override.value) == str(direct.value)


def test_later_stage_set_with_a_wrong_type_leaves_config_json_untouched(tmp_path, capsys):
    PipelineConfig().save(tmp_path / "config.json")
    before = (tmp_path / "config.json").read_bytes()
    assert main(["finetune", "--run-dir", str(tmp_path), "--set", "train.max_steps=abc"]) == 2
    assert 'train.max_steps="abc"' in _assert_cli_error(*capsys.readouterr()[::-1])
    assert (tmp_path / "config.json").read_bytes() == before


# ------------------------------------------------------------------------------------ messages
@pytest.mark.parametrize(("pair", "message"), [
    ("train.max_steps=2.5", "got a float (integers only)"),
    ("train.batch_size=3.0", "without a decimal point: write 3); e.g. --set train.batch_size=3"),
    ("train.max_steps=true", "booleans are not integers"),
    ("train.max_steps=abc", "e.g. --set train.max_steps=150"),
    ("eval.ks=10", "a list is needed, even for one value); e.g. --set 'eval.ks=[10]'"),
    ("rerank.sweep_depths=[10, \"a\"]", 'element 1 is "a": got a string'),
    ("data.dataset=null", "got null (this field cannot be null)"),
    ("train.logq_correction=1", "write true or false"),
    ("encoder.target_modules=query", """e.g. --set 'encoder.target_modules=["query"]'"""),
])
def test_messages_say_what_to_write(pair, message):
    with pytest.raises(ConfigError, match="has the wrong type") as err:
        PipelineConfig().override(parse_overrides([pair]))
    assert message in str(err.value)


def test_a_json_file_string_that_holds_a_number_suggests_the_number():
    with pytest.raises(ConfigError) as err:
        PipelineConfig.from_dict({"train": {"max_steps": "10"}})
    assert str(err.value).endswith("e.g. --set train.max_steps=10")


def test_range_checks_only_see_the_declared_type():
    with pytest.raises(ConfigError, match=r"train.batch_size=1 is invalid: in-batch negatives"):
        TrainConfig(batch_size=1)
    with pytest.raises(ConfigError, match=r"eval.ks=\[\] is invalid: need cut-offs >= 1"):
        EvalConfig(ks=[])
    with pytest.raises(ConfigError, match="choose one of linear, cosine, constant"):
        TrainConfig(lr_schedule="cos")


def test_every_field_has_a_checked_type_and_an_example():
    for section, cls in SECTIONS.items():
        types = field_types(cls)
        for f in dataclasses.fields(cls):
            hint = example(f"{section}.{f.name}", f, types[f.name], object())
            assert hint is not None and hint.startswith((f"--set {section}.", f"--set '{section}.")), hint
            with pytest.raises(ConfigError, match="has the wrong type"):
                cls(**{f.name: object()})


def test_sections_and_config_shape_are_checked():
    with pytest.raises(ConfigError, match="train=5 has the wrong type: expected TrainConfig"):
        PipelineConfig(train=5)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="section 'train' must be a JSON object of fields, got a list"):
        PipelineConfig.from_dict({"train": [1]})
    with pytest.raises(ConfigError, match="a config is a JSON object of sections"):
        PipelineConfig.from_dict([])  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ accepted values
@pytest.mark.parametrize(("pair", "attr", "expected"), [
    ("train.lr=1", ("train", "lr"), 1),
    ("hybrid.weights=[0, 1]", ("hybrid", "weights"), [0, 1]),
    ("eval.ks=[10, 20]", ("eval", "ks"), [10, 20]),
    ("data.min_rating=null", ("data", "min_rating"), None),
    ("data.min_rating=4", ("data", "min_rating"), 4),
    ("data.path=null", ("data", "path"), None),
    ("encoder.target_modules=null", ("encoder", "target_modules"), None),
    ("encoder.target_modules=[\"query\", \"value\"]", ("encoder", "target_modules"), ["query", "value"]),
    ("encoder.backbone=123", ("encoder", "backbone"), "123"),
    ("index.factory=IVF4,Flat", ("index", "factory"), "IVF4,Flat"),
    ("rerank.select_on_valid=true", ("rerank", "select_on_valid"), True),
    ("index.milvus_uri=runs/a@b/milvus.db", ("index", "milvus_uri"), "runs/a@b/milvus.db"),
])
def test_good_values_are_accepted_on_every_path(tmp_path, pair, attr, expected):
    cfg = PipelineConfig().override(parse_overrides([pair]))
    assert getattr(getattr(cfg, attr[0]), attr[1]) == expected
    cfg.save(tmp_path / "config.json")
    assert PipelineConfig.load(tmp_path / "config.json") == cfg


# ------------------------------------------------------------------------------------ the --set parser
@pytest.mark.parametrize(("pair", "message"), [
    ("train.max_steps", "--set 'train.max_steps': no '=' in it; use SECTION.FIELD=VALUE"),
    ("max_steps=10", "has no section: use SECTION.FIELD=VALUE, e.g. --set train.max_steps=300; did you mean "
                     "train.max_steps or rerank.max_steps?"),
    ("nothing=10", "(sections: data, split, text, encoder, train, index, rerank, hybrid, eval)"),
    ("trian.max_steps=1", "unknown config section 'trian'"),
    ("train.max_step=1", "unknown config key 'train.max_step'; did you mean train.max_steps?"),
])
def test_malformed_set_pairs_are_clear_errors(tmp_path, capsys, pair, message):
    with pytest.raises(ConfigError) as err:
        parse_overrides([pair])
    assert message in str(err.value)
    assert main(["prepare", "--run-dir", str(tmp_path / "run"), "--set", pair]) == 2
    assert message in _assert_cli_error(*capsys.readouterr()[::-1])
    assert not (tmp_path / "run").exists()


def test_cli_uses_the_one_parser():
    pairs = ["train.max_steps=10", "eval.ks=[5,10]", "index.factory=HNSW32", "data.path=null"]
    assert commands.parse_overrides is parse_overrides
    assert parse_overrides(pairs) == {
        "train.max_steps": 10, "eval.ks": [5, 10], "index.factory": "HNSW32", "data.path": None}
    assert parse_overrides(["train.max_steps=1", "train.max_steps=2"]) == {"train.max_steps": 2}


# ------------------------------------------------------------------------------------ no secrets
SECRET_URIS = [
    "http://user:hunter2@milvus:19530",
    "https://milvus:19530/?token=hunter2",
    "http://milvus:19530?db_name=x&password=hunter2",
    "http://hunter2@milvus:19530",
]


@pytest.mark.parametrize("uri", SECRET_URIS)
def test_milvus_uri_with_credentials_is_refused_without_echoing_them(tmp_path, capsys, uri):
    run = tmp_path / "run"
    assert main(["prepare", "--run-dir", str(run), "--set", f"index.milvus_uri={uri}"]) == 2
    err = _assert_cli_error(*capsys.readouterr()[::-1])
    assert "index.milvus_uri=" in err and MILVUS_TOKEN_ENV in err and "hunter2" not in err
    assert not run.exists()
    with pytest.raises(ConfigError, match=MILVUS_TOKEN_ENV) as api:
        IndexConfig(backend="milvus", milvus_uri=uri)
    assert "hunter2" not in str(api.value) and "milvus:19530" in str(api.value)


def test_a_secret_never_reaches_config_json(tmp_path, capsys):
    PipelineConfig().save(tmp_path / "config.json")
    before = (tmp_path / "config.json").read_bytes()
    pair = f"index.milvus_uri={SECRET_URIS[0]}"
    assert main(["index", "build", "--run-dir", str(tmp_path), "--set", pair]) == 2
    assert "hunter2" not in capsys.readouterr().err
    assert (tmp_path / "config.json").read_bytes() == before
    cfg = PipelineConfig()
    cfg.index.milvus_uri = SECRET_URIS[1]  # set after construction: save checks again
    with pytest.raises(ConfigError, match=MILVUS_TOKEN_ENV):
        cfg.save(tmp_path / "other.json")
    assert not (tmp_path / "other.json").exists()


def test_hand_edited_secret_is_refused_on_load_without_echoing_it(tmp_path, capsys):
    d = PipelineConfig().to_dict()
    d["index"]["milvus_uri"] = SECRET_URIS[0]
    (tmp_path / "config.json").write_text(json.dumps(d))
    assert main(["finetune", "--run-dir", str(tmp_path)]) == 2
    err = _assert_cli_error(*capsys.readouterr()[::-1])
    assert "config.json: index.milvus_uri=" in err and "http://user:***@milvus:19530" in err
    assert "hunter2" not in err


def test_every_config_error_masks_secrets():
    assert mask_secrets("x http://u:pw@h:1/p?token=t&a=1 y") == "x http://u:***@h:1/p?token=***&a=1 y"
    assert mask_secrets("grpc://key@h?API_KEY=k;password=p") == "grpc://***@h?API_KEY=***;password=***"
    assert str(ConfigError("uri 'https://a:b@c' bad")) == "uri 'https://a:***@c' bad"
    with pytest.raises(ConfigError) as err:
        parse_overrides(["index_milvus_uri=http://u:pw@h"])
    assert "pw" not in str(err.value)


def test_token_env_name_matches_the_milvus_backend():
    from recsys_llm.index.milvus_index import TOKEN_ENV

    assert MILVUS_TOKEN_ENV == TOKEN_ENV


@pytest.mark.parametrize("name", ["", ".checks", ".overrides"])
def test_config_module_examples(name):
    result = doctest.testmod(importlib.import_module(f"recsys_llm.config{name}"))
    assert result.attempted > 0 and result.failed == 0

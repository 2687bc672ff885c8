"""Config and artifact errors name the field or the file (issue 13).

Every `*Config` dataclass of conrec_lib is found by walking the package, so a new config is covered without
editing this file: it builds with its defaults, survives a round trip through config.json, and rejects a wrongly
typed value with a TypeError naming the class and the field. Every run-folder artifact, truncated, raises an
ArtifactError naming the file and the notebook that writes it.
"""
import dataclasses
import importlib
import json
import pkgutil
import shutil
import typing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import conrec_lib
from conrec_lib import artifacts, runs
from conrec_lib.data import dataprep
from conrec_lib.sids import item_tokenizer
from conrec_lib.llm import model, sft
from conrec_lib.sids import embeddings as emb
from conrec_lib import configs
from conrec_lib.configs import ConfigTypeError, check_types
from conrec_lib.sids.embeddings import EmbedConfig
from conrec_lib.sids.quantizer import SIDConfig


def config_classes() -> list[type]:
    """Every dataclass named `*Config` defined in a conrec_lib module."""
    found = []
    for info in pkgutil.walk_packages(conrec_lib.__path__, "conrec_lib."):
        if info.name.rsplit(".", 1)[-1].startswith("_"):  # __main__ runs the CLI
            continue
        module = importlib.import_module(info.name)
        found += [obj for obj in vars(module).values() if isinstance(obj, type) and dataclasses.is_dataclass(obj)
                  and obj.__name__.endswith("Config") and obj.__module__ == module.__name__]
    return sorted(found, key=lambda c: c.__name__)


CONFIGS = config_classes()
assert len(CONFIGS) >= 23, "config discovery found too few *Config classes"


def arms(hint) -> tuple:
    """The types a field accepts: the arms of an Optional/Union, else the hint itself."""
    return typing.get_args(hint) if typing.get_origin(hint) is typing.Union else (hint,)


def field_hints(cls) -> dict:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def numeric_fields(cls) -> list[str]:
    return [name for name, hint in field_hints(cls).items() if {int, float} & set(arms(hint))]


def test_every_config_module_is_walked():
    assert len(CONFIGS) >= 23
    assert {"SplitConfig", "GRPOConfig", "SimConfig", "TokenizerConfig"} <= {c.__name__ for c in CONFIGS}


# --- configs -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_default_construction_passes_the_checks(cls):
    cfg = cls()
    check_types(cfg)


@pytest.mark.parametrize("cls", [c for c in CONFIGS if numeric_fields(c)], ids=lambda c: c.__name__)
def test_a_string_in_a_numeric_field_names_class_and_field(cls):
    for name in numeric_fields(cls):
        with pytest.raises(TypeError, match=rf"^{cls.__name__}\.{name}: expected .*(int|float).*, got str '7'$"):
            cls(**{name: "7"})


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_every_field_rejects_a_value_of_the_wrong_type(cls):
    """A string where the field takes none, a float where it takes a string: each names class and field."""
    for name, hint in field_hints(cls).items():
        wrong = 7.5 if str in arms(hint) else "7"
        with pytest.raises(TypeError, match=rf"^{cls.__name__}\.{name}(\[| key |:)"):
            cls(**{name: wrong})


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_a_config_reads_back_from_its_json(cls, tmp_path):
    """JSON turns tuples into lists; the checks take them back, and the config writes the same file again."""
    runs.write_json(tmp_path / "config.json", cls())
    runs.write_json(tmp_path / "again.json", configs.read(cls, tmp_path / "config.json"))
    assert (tmp_path / "again.json").read_text() == (tmp_path / "config.json").read_text()
    assert configs.read(cls, tmp_path / "config.json") == cls()  # tuples are tuples again, nested configs configs


def test_the_issue_example():
    from conrec_lib.data.splits import SplitConfig
    with pytest.raises(TypeError) as err:
        SplitConfig(horizon_days="7")
    assert str(err.value) == "SplitConfig.horizon_days: expected int, got str '7'"


def test_what_the_checks_accept():
    from conrec_lib.evaluation.ab_test import ABConfig
    from conrec_lib.llm.sft import SFTConfig
    from conrec_lib.data.splits import SplitConfig
    SFTConfig(weight_decay=0, max_grad_norm=np.float32(0.5), seed=np.int64(3))  # an int for a float; numpy numbers
    SplitConfig(test_cutoff_day=None, train_cutoff_days=[2, 4])  # None for Optional; a list (JSON) for a tuple
    ABConfig(seeds=range(3))
    assert EmbedConfig(feedback_weights={"positive": 1}).feedback_weights == (("positive", 1.0),)  # pairs as a dict


@pytest.mark.parametrize("build, message", [
    (lambda: SIDConfig(levels=True), "SIDConfig.levels: expected int, got bool True"),
    (lambda: SIDConfig(levels=3.0), "SIDConfig.levels: expected int, got float 3.0"),
    (lambda: SIDConfig(device=0), "SIDConfig.device: expected str or None, got int 0"),
    (lambda: SIDConfig(hidden_dims=(256, "128")), "SIDConfig.hidden_dims[1]: expected int, got str '128'"),
    (lambda: SIDConfig(hidden_dims=256), "SIDConfig.hidden_dims: expected tuple[int, ...], got int 256"),
    (lambda: EmbedConfig(feedback_weights={"positive": "1"}),
     "EmbedConfig.feedback_weights[0][1]: expected float, got str '1'"),
    (lambda: item_tokenizer.TokenizerConfig(embed="tfidf"),
     "TokenizerConfig.embed: expected EmbedConfig, got str 'tfidf'"),
    (lambda: item_tokenizer.TokenizerConfig(compare="no"), "TokenizerConfig.compare: expected bool, got str 'no'"),
])
def test_what_the_checks_reject(build, message):
    with pytest.raises(ConfigTypeError) as err:
        build()
    assert str(err.value) == message
    assert isinstance(err.value, ValueError)  # code catching bad config values (ValueError) still catches it


# --- artifacts ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def built_run(tmp_path_factory) -> runs.Run:
    """Stages 01 and 02 of the tiny simulator (TF-IDF, 8-code residual k-means), written once."""
    run = runs.Run.at(tmp_path_factory.mktemp("artifacts") / "run")
    dataprep.prepare(dataprep.DataConfig(scale="tiny"), run, progress=False)
    cfg = item_tokenizer.TokenizerConfig(embed=EmbedConfig(encoder="tfidf", dim=16), compare=False,
                                         sid=SIDConfig(quantizer="rqkmeans", codebook_size=8))
    item_tokenizer.tokenize(cfg, run, progress=False)
    return run


def copy_of(run: runs.Run, tmp_path: Path) -> runs.Run:
    shutil.copytree(run.root, tmp_path / "run")
    return runs.Run.at(tmp_path / "run")


def truncate(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


READERS = {"01": dataprep.load_prepared, "02": item_tokenizer.load_sids}


@pytest.mark.parametrize("keep", [0.5, 0.0], ids=["half", "empty"])
@pytest.mark.parametrize("artifact, notebook", [
    ("01_data/dataset/interactions.parquet", "01_data_exploration.ipynb"),
    ("01_data/dataset/items.parquet", "01_data_exploration.ipynb"),
    ("01_data/dataset/ground_truth.parquet", "01_data_exploration.ipynb"),
    ("01_data/split/train.parquet", "01_data_exploration.ipynb"),
    ("01_data/split/test.parquet", "01_data_exploration.ipynb"),
    ("01_data/split/longtail_items.parquet", "01_data_exploration.ipynb"),
    ("02_semantic_ids/sids/sid_table.parquet", "02_semantic_ids.ipynb"),
    ("02_semantic_ids/sids/quantizer.npz", "02_semantic_ids.ipynb"),
    ("02_semantic_ids/sids/history.parquet", "02_semantic_ids.ipynb"),
    ("02_semantic_ids/item_embeddings.npy", "02_semantic_ids.ipynb"),
])
def test_a_truncated_artifact_names_the_file_and_the_notebook(built_run, tmp_path, artifact, notebook, keep):
    run = copy_of(built_run, tmp_path)
    truncate(run.root / artifact, keep)
    with pytest.raises(artifacts.ArtifactError) as err:
        READERS[artifact[:2]](run)
    assert str(err.value).startswith(f"{run.root / artifact}: damaged or truncated (")
    assert f"Re-run notebooks/{notebook} with RUN_DIR={str(run.root)!r}" in str(err.value)


def test_a_missing_artifact_keeps_its_file_not_found_error(built_run, tmp_path):
    run = copy_of(built_run, tmp_path)
    (run.root / "01_data/split/train.parquet").unlink()
    with pytest.raises(FileNotFoundError) as err:
        dataprep.load_prepared(run)
    assert not isinstance(err.value, artifacts.ArtifactError)


def test_a_truncated_embedding_cache_says_delete_it(built_run, tmp_path):
    ds, cfg = dataprep.load_prepared(built_run).dataset, EmbedConfig(encoder="tfidf", dim=16)
    emb.embed_items(ds, cfg, cache_dir=tmp_path)
    (cached,) = tmp_path.glob("*.npy")
    truncate(cached, 0.5)
    with pytest.raises(artifacts.ArtifactError, match=rf"{cached.name}: damaged or truncated .* Delete it"):
        emb.embed_items(ds, cfg, cache_dir=tmp_path)


def test_a_truncated_checkpoint_names_its_notebook(tmp_path):
    path = tmp_path / "run" / "05_progressive_grpo" / "conrec" / "checkpoint.pt"
    path.parent.mkdir(parents=True)
    torch.save({"weights": {"w": torch.zeros(64, 64)}}, path)
    truncate(path, 0.5)
    with pytest.raises(artifacts.ArtifactError, match=r"checkpoint.pt: damaged .* notebooks/05_progressive_grpo"):
        sft.load_checkpoint(path, None, None, sft.SFTConfig())


@pytest.mark.parametrize("damaged", ["adapter/adapter_model.safetensors", "base/model.safetensors",
                                     "tokenizer/tokenizer.json", "bundle.json"])
def test_a_truncated_saved_model_names_its_notebook(tmp_path, damaged):
    sid_tokens = [f"<{level}_{code}>" for level in "abc" for code in range(3)]
    bundle = model.load_model(model.ModelConfig(device="cpu", sid_init="mean", hidden_size=32, num_heads=2,
                                                intermediate_size=64, num_layers=1, tokenizer_vocab_size=300),
                              sid_tokens, ["red shoes", "blue phone case"])
    folder = tmp_path / "run" / "04_context_discerning" / "with_alignment" / "warmup" / "adapter"
    model.save_adapter(bundle, folder)
    truncate(folder / damaged, 0.5)
    with pytest.raises(artifacts.ArtifactError, match=r"damaged or truncated .* notebooks/04_context_discerning"):
        model.load_adapter(bundle.config, folder, sid_tokens)


def test_reading_turns_only_read_errors_into_artifact_errors(tmp_path):
    path = tmp_path / "run" / "03_positivity_bias" / "coverage.csv"
    path.parent.mkdir(parents=True)
    path.write_text("")
    with pytest.raises(artifacts.ArtifactError, match=r"coverage.csv: damaged .* notebooks/03_positivity_bias"):
        artifacts.read(pd.read_csv, path)
    with pytest.raises(KeyError):  # not a reader's error: passed on as it is
        with artifacts.reading(path):
            raise KeyError("a bug")
    with pytest.raises(FileNotFoundError):
        artifacts.read(pd.read_csv, path.with_name("absent.csv"))


def test_a_sub_run_of_notebook_06_names_notebook_06():
    """Notebook 06 writes whole sub-runs inside its stage folder: re-running it writes them again."""
    hint = artifacts.rewrite_hint("runs/tutorial/06_evaluation/simulator_seed0/01_data/dataset/items.parquet")
    assert hint == "Re-run notebooks/06_evaluation.ipynb with RUN_DIR='runs/tutorial' to write it again."


def test_a_truncated_json_config_of_a_saved_model(tmp_path):
    path = tmp_path / "04_context_discerning" / "bundle.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"config": {}})[:5])
    with pytest.raises(artifacts.ArtifactError, match="bundle.json: damaged or truncated"):
        model.read_bundle_json(path.parent)

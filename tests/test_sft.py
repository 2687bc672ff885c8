"""SFT on a memorisable toy task with the tiny model: the loss falls, only the right weights move, resume is exact."""
import itertools
import random

import pytest
import torch

from conrec_lib.llm import decoding, model, prompts, sft
from conrec_lib.llm.prompts import PromptConfig

SID_TOKENS = [f"<{level}_{code}>" for level in "abcd" for code in range(4)]
ITEMS = ["".join(f"<{lv}_{c}>" for lv, c in zip("abcd", codes)) for codes in itertools.product(range(4), repeat=4)]
_rng = random.Random(0)
EXAMPLES = [(f"user {u} will dislike", _rng.choice(ITEMS)) for u in range(8)]  # one SID to memorise per user
CORPUS = [p for p, _ in EXAMPLES]


def tiny(lora: bool = True, **sizes) -> model.ModelBundle:
    return model.load_model(model.ModelConfig(lora=lora, device="cpu", sid_init="mean", **sizes), SID_TOKENS, CORPUS)


def short(**overrides) -> sft.SFTConfig:
    values = dict(max_steps=6, batch_size=4, warmup_steps=2, log_every=1, checkpoint_every=100)
    return sft.SFTConfig(**{**values, **overrides})


def effective_rows(bundle: model.ModelBundle, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The input-embedding and LM-head rows the model actually uses for `ids` (adapters included)."""
    with torch.no_grad():
        embedded = bundle.model.get_input_embeddings()(torch.tensor([ids]))[0]
        head = bundle.model.get_output_embeddings()(torch.eye(bundle.model.config.hidden_size))  # (H, V)
    return embedded.clone(), head[:, ids].T.clone()


def test_loss_is_finite_and_falls_on_a_memorisable_task():
    bundle = tiny()
    result = sft.train(bundle, EXAMPLES, short(max_steps=30, batch_size=8, log_every=5), progress=False)
    losses = result.history["loss"].tolist()
    assert result.steps == 30 and len(losses) == 6
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.5 * losses[0]
    assert list(result.history.columns) == ["step", "loss", "lr", "eval_loss"]


def test_lora_moves_adapters_and_sid_rows_but_not_base_weights():
    bundle = tiny()
    frozen = {n: p.detach().clone() for n, p in bundle.model.named_parameters() if not p.requires_grad}
    lora = {n: p.detach().clone() for n, p in bundle.model.named_parameters() if "lora_B" in n}
    other_ids = [i for i in range(len(bundle.tokenizer)) if i not in bundle.sid_token_ids][:20]
    other_ids = [i for i in other_ids if i != bundle.tokenizer.eos_token_id]
    sid_before, other_before = effective_rows(bundle, bundle.sid_token_ids), effective_rows(bundle, other_ids)
    sft.train(bundle, EXAMPLES, short(), progress=False)
    params = dict(bundle.model.named_parameters())
    assert all(torch.equal(params[n], p) for n, p in frozen.items())  # base weights untouched
    assert all(not torch.equal(params[n], p) for n, p in lora.items())  # every LoRA B matrix moved
    sid_after, other_after = effective_rows(bundle, bundle.sid_token_ids), effective_rows(bundle, other_ids)
    assert not torch.allclose(sid_before[0], sid_after[0])  # SID input embeddings trained
    assert not torch.allclose(sid_before[1], sid_after[1])  # SID output (LM head) rows trained
    assert torch.equal(other_before[0], other_after[0]) and torch.equal(other_before[1], other_after[1])


def test_untied_lm_head_rows_train_too():
    bundle = tiny(tie_embeddings=False)
    before = effective_rows(bundle, bundle.sid_token_ids)
    sft.train(bundle, EXAMPLES, short(max_steps=3), progress=False)
    after = effective_rows(bundle, bundle.sid_token_ids)
    assert not torch.allclose(before[0], after[0]) and not torch.allclose(before[1], after[1])


def test_full_finetuning_moves_every_weight_matrix():
    bundle = tiny(lora=False)
    before = {n: p.detach().clone() for n, p in bundle.model.named_parameters()}
    sft.train(bundle, EXAMPLES, short(max_steps=3), progress=False)
    moved = [not torch.equal(p, before[n]) for n, p in bundle.model.named_parameters()]
    assert all(moved)


def test_loss_covers_completion_tokens_only():
    bundle = tiny()
    encoded = sft.encode_examples(bundle.tokenizer, EXAMPLES[:2], max_length=512).examples
    eos = bundle.tokenizer.eos_token_id
    for example, (prompt, completion) in zip(encoded, EXAMPLES):
        assert len(example.completion) == 5 and set(example.completion[:4]) <= set(bundle.sid_token_ids)
        assert example.completion[-1] == eos
        assert example.completion == model.encode_completion(bundle.tokenizer, completion) + [eos]
    # the loss is exactly the completion tokens' negative log-likelihood: 4 SID tokens + EOS per example
    summed = sft.summed_loss(bundle.model, encoded)
    assert summed.tokens == 2 * 5
    with torch.no_grad():
        logp = decoding.token_logprobs(bundle.model, bundle.tokenizer, [p for p, _ in EXAMPLES[:2]],
                                       [c + bundle.tokenizer.eos_token for _, c in EXAMPLES[:2]])
    assert summed.loss.item() == pytest.approx(-logp.logprobs.sum().item(), rel=1e-5)


def test_long_prompts_keep_their_last_tokens():
    bundle = tiny()
    encoded = sft.encode_examples(bundle.tokenizer, [("word " * 100, ITEMS[0])], max_length=20)
    full = model.encode_prompt(bundle.tokenizer, "word " * 100)
    assert encoded.truncated == 1
    assert len(encoded.examples[0].prompt) + len(encoded.examples[0].completion) == 20
    assert encoded.examples[0].prompt == full[-15:]
    with pytest.raises(ValueError, match="max_length"):
        sft.encode_examples(bundle.tokenizer, [("x", ITEMS[0])], max_length=5)


def test_resume_reaches_the_same_result_as_an_uninterrupted_run(tmp_path):
    cfg = short(checkpoint_every=2)
    straight = tiny()
    whole = sft.train(straight, EXAMPLES, cfg, out_dir=tmp_path / "a", progress=False)
    interrupted = tiny()
    part = sft.train(interrupted, EXAMPLES, cfg, out_dir=tmp_path / "b", progress=False, stop_after=3)
    assert part.steps == 3
    resumed = tiny()  # a fresh process would start from a fresh model too
    rest = sft.train(resumed, EXAMPLES, cfg, out_dir=tmp_path / "b", progress=False)
    assert rest.steps == 6
    assert rest.history.equals(whole.history)
    for (name, p), q in zip(sft.trainable(straight.model).items(), sft.trainable(resumed.model).values()):
        assert torch.allclose(p, q, atol=1e-6), name
    assert (tmp_path / "b" / sft.CHECKPOINT).is_file() and (tmp_path / "b" / sft.HISTORY).is_file()


def test_resume_refuses_a_changed_config(tmp_path):
    sft.train(tiny(), EXAMPLES, short(max_steps=4), out_dir=tmp_path, progress=False, stop_after=2)
    with pytest.raises(ValueError, match="lr"):
        sft.train(tiny(), EXAMPLES, short(max_steps=4, lr=1e-4), out_dir=tmp_path, progress=False)


@pytest.mark.parametrize("lora", [True, False])
def test_saved_adapter_reloads_to_identical_logits(tmp_path, lora):
    bundle = tiny(lora=lora)
    sft.train(bundle, EXAMPLES, short(max_steps=3), out_dir=tmp_path, progress=False)
    loaded = model.load_adapter(bundle.config, tmp_path / sft.ADAPTER, SID_TOKENS)
    ids = torch.tensor([model.encode_prompt(bundle.tokenizer, EXAMPLES[0][0]) + bundle.sid_token_ids[:4]])
    bundle.model.eval(), loaded.model.eval()
    with torch.no_grad():
        assert torch.equal(bundle.model(input_ids=ids).logits, loaded.model(input_ids=ids).logits)
    assert loaded.sid_token_ids == bundle.sid_token_ids


def test_eval_loss_is_recorded_at_the_end():
    result = sft.train(tiny(), EXAMPLES, short(max_steps=3, log_every=2), progress=False,
                       eval_examples=EXAMPLES[:2])
    assert result.history["step"].tolist() == [2, 3]
    assert result.history["eval_loss"].isna().tolist() == [True, False]


def test_every_epoch_visits_every_example_once():
    order = [i for b in range(6) for i in sft.batch_indices(5, 5, seed=3, index=b)]
    assert all(sorted(order[e * 5:(e + 1) * 5]) == list(range(5)) for e in range(6))
    assert order[:5] != order[5:10]  # a new shuffle each epoch


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="batch_size"):
        sft.SFTConfig(batch_size=0)
    with pytest.raises(ValueError, match="warmup_steps"):
        sft.SFTConfig(max_steps=5, warmup_steps=5)
    with pytest.raises(ValueError, match="lr"):
        sft.SFTConfig(lr=0)


def test_trie_loss_normalises_over_valid_codes_only(tiny_prepared):
    from conrec_lib.llm import model, recommend, sft, tasks
    from conrec_lib.llm.prompts import PromptConfig
    prepared, tokenized = tiny_prepared
    table = tokenized.sids.table
    examples = tasks.next_negative_examples(prepared, table, PromptConfig(), "train", max_examples=32)
    bundle = model.load_model(model.ModelConfig(device="cpu", lora=False, sid_init="mean", hidden_size=32, num_layers=1, num_heads=2,
                                                intermediate_size=64), table.vocabulary(), [e.prompt for e in examples])
    trie = recommend.sid_trie(bundle, table)
    encoded = sft.encode_examples(bundle.tokenizer, tasks.pairs(examples), 512).examples
    full, n = sft.summed_loss(bundle.model, encoded[:8])
    over_trie, m = sft.summed_loss(bundle.model, encoded[:8], trie)
    assert n == m and over_trie.item() < full.item()  # fewer competitors per token: never a larger loss
    with pytest.raises(ValueError, match="needs the SID trie"):
        sft.train(bundle, tasks.pairs(examples), sft.SFTConfig(max_steps=2, warmup_steps=0, loss_over="trie"),
                  progress=False)
    result = sft.train(bundle, tasks.pairs(examples), sft.SFTConfig(max_steps=30, warmup_steps=2, lr=3e-3,
                                                                    loss_over="trie"), progress=False, trie=trie)
    assert result.history["loss"].iloc[-1] < result.history["loss"].iloc[0]


def test_history_loss_covers_the_prompts_sid_tokens_from_one_forward_pass():
    bundle = tiny(lora=False)
    history = [(f"disliked {ITEMS[3]}{ITEMS[5]} next", ITEMS[7]), ("disliked nothing next", ITEMS[1])]
    encoded = sft.encode_examples(bundle.tokenizer, history, max_length=512).examples
    sid_ids = frozenset(bundle.sid_token_ids)
    losses = sft.summed_losses(bundle.model, encoded, sid_ids)
    plain = sft.summed_loss(bundle.model, encoded)
    assert losses.completion.tokens == plain.tokens and losses.completion.loss.item() == pytest.approx(plain.loss.item(), rel=1e-5)
    assert losses.history.tokens == 8 == sum(sft.history_positions(e, sid_ids) for e in encoded)
    # the history term is the NLL of those 8 prompt tokens given what precedes them
    with torch.no_grad():
        prompt = model.encode_prompt(bundle.tokenizer, history[0][0])
        cut = next(j for j, t in enumerate(prompt) if t in sid_ids)
        out = decoding.completion_logits(bundle.model, [prompt[:cut]], [prompt[cut:cut + 8]])
        nll = torch.nn.functional.cross_entropy(out.logits[0], out.targets[0], reduction="sum")
    assert losses.history.loss.item() == pytest.approx(nll.item(), rel=1e-4)


def test_history_loss_skips_the_positive_section():
    bundle = tiny(lora=False)
    cfg = PromptConfig(include_positives=True)
    with_pos = prompts.build_prompt([ITEMS[3], ITEMS[5]], [ITEMS[9], ITEMS[11], ITEMS[13]], cfg)
    neg_only = prompts.build_prompt([ITEMS[3], ITEMS[5]], [], PromptConfig())
    encoded = sft.encode_examples(bundle.tokenizer, [(with_pos, ITEMS[7]), (neg_only, ITEMS[7])], 512).examples
    sid_ids = frozenset(bundle.sid_token_ids)
    assert encoded[0].history_from > 0 and encoded[1].history_from == 0
    # both count the 8 SID tokens of the two negatives only; the 12 of the positives are context
    assert [sft.history_positions(e, sid_ids) for e in encoded] == [8, 8]
    losses = sft.summed_losses(bundle.model, encoded[:1], sid_ids)
    assert losses.history.tokens == 8
    with torch.no_grad():  # the same NLL as predicting the negatives' tokens from everything before them
        ids = encoded[0].prompt
        picked = [j for j in range(encoded[0].history_from, len(ids)) if ids[j] in sid_ids]
        logits = bundle.model(input_ids=torch.tensor([ids])).logits[0]
        nll = torch.nn.functional.cross_entropy(logits[[j - 1 for j in picked]], torch.tensor([ids[j] for j in picked]),
                                                reduction="sum")
    assert losses.history.loss.item() == pytest.approx(nll.item(), rel=1e-4)


def test_history_loss_changes_training_and_zero_leaves_it_as_it_was():
    history = [(f"disliked {a}{b} next", c) for a, b, c in zip(ITEMS[:8], ITEMS[8:16], ITEMS[16:24])]
    runs = {w: tiny(lora=False) for w in (0.0, 1.0)}
    results = {w: sft.train(b, history, short(history_loss=w), progress=False) for w, b in runs.items()}
    baseline = tiny(lora=False)
    plain = sft.train(baseline, history, short(), progress=False)
    assert results[0.0].history["loss"].tolist() == plain.history["loss"].tolist()
    assert results[1.0].history["loss"].tolist() != plain.history["loss"].tolist()
    with pytest.raises(ValueError, match="history_loss"):
        short(history_loss=-1.0)

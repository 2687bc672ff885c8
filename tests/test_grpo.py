"""GRPO: hand-checked advantages, KL and clipping, parity with TRL's loss, a LoRA run, valid rollouts."""
import numpy as np
import pytest
import torch

from conrec_lib import hardware
from conrec_lib.llm import decoding
from conrec_lib.rl import grpo, rewards
from conrec_lib.rl.grpo import GRPOConfig
from conrec_lib.llm.model import ModelConfig, load_model
from conrec_lib.sids.semantic_ids import SIDTable

TABLE = SIDTable(np.array([[a, b, 0] for a in range(3) for b in range(3)]), codebook_size=3, levels=2)
EMB = np.array([[1.0, a, b] for a in range(3) for b in range(3)])


@pytest.fixture(autouse=True)
def one_cpu_thread():
    with hardware.cpu_threads(1):
        yield


def tiny_bundle(lora: bool):
    cfg = ModelConfig(device="cpu", lora=lora, sid_init="mean", hidden_size=32, num_heads=2, intermediate_size=64,
                      num_layers=1, tokenizer_vocab_size=300)
    return load_model(cfg, TABLE.vocabulary(), ["Which item will the user mark not interested next?"] * 4)


def toy_examples(n=4):
    return [{"prompt": f"user {u}: which item next?\n", "ground_truth": [u % 9], "future_positives": [(u + 4) % 9],
             "next_negative": u % 9} for u in range(n)]


def test_advantages_of_two_groups_by_hand():
    # groups [1, 0] and [0, 1]: mean 0.5, unbiased std sqrt(0.5) = 0.7071 -> +-0.5 / (0.7071 + 1e-4)
    adv = grpo.group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), 2)
    assert adv.tolist() == pytest.approx([0.5 / (0.5 ** 0.5 + 1e-4) * s for s in (1, -1, -1, 1)])
    assert grpo.group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), 2, "none").tolist() == [0.5, -0.5, -0.5, 0.5]


def test_equal_rewards_get_zero_advantage_and_count_as_zero_std():
    rewards_ = torch.tensor([0.3, 0.3, 0.3, 1.0, 0.0, 0.5])
    adv = grpo.group_advantages(rewards_, 3)
    assert adv[:3].tolist() == [0.0, 0.0, 0.0] and adv[3:].abs().sum() > 0
    assert grpo.zero_std_fraction(rewards_, 3) == 0.5


def test_kl_is_zero_for_identical_policies_and_positive_otherwise():
    logp = torch.log(torch.tensor([[0.5, 0.25], [0.9, 0.1]]))
    assert grpo.per_token_kl(logp, logp).abs().max() == 0
    assert (grpo.per_token_kl(logp, logp - 0.3) > 0).all()
    parts = grpo.grpo_loss(logp, logp, logp, torch.tensor([1.0, -1.0]), torch.ones(2, 2, dtype=torch.bool), 0.1, 0.2)
    assert parts.kl == 0 and parts.clip_ratio == 0
    assert parts.loss.item() == pytest.approx(0.0)  # ratio 1: -(A1 * 2 + A2 * 2) / 4 = 0


def test_clipping_stops_the_gradient_beyond_one_plus_epsilon():
    logp = torch.tensor([[0.0]], requires_grad=True)  # ratio e^(0 - (-1)) = 2.7 > 1.2, advantage > 0
    parts = grpo.grpo_loss(logp, torch.tensor([[-1.0]]), None, torch.tensor([1.0]), torch.ones(1, 1), 0.0, 0.2)
    parts.loss.backward()
    assert parts.clip_ratio == 1.0 and logp.grad.item() == 0.0 and parts.loss.item() == pytest.approx(-1.2)


def trl_trainer(tmp_path, bundle, reward_funcs, **kw):
    """TRL's GRPOTrainer on our tiny model (beta 0 at construction: with beta > 0 TRL loads a reference by name)."""
    trl = pytest.importorskip("trl", reason="TRL (a test extra) is not installed: no parity check")
    from datasets import Dataset
    args = trl.GRPOConfig(**{"output_dir": str(tmp_path), "use_cpu": True, "report_to": [], "num_generations": 2,
                             "per_device_train_batch_size": 4, "max_completion_length": 3, "beta": 0.0,
                             "epsilon": 0.2, "temperature": 1.0, "logging_steps": 1, **kw})
    return trl.GRPOTrainer(model=bundle.model, reward_funcs=reward_funcs, args=args,
                           train_dataset=Dataset.from_list([{"prompt": "hi"}] * 4), processing_class=bundle.tokenizer)


@pytest.mark.parametrize("loss_type", ["dapo", "grpo", "bnpo", "dr_grpo"])
def test_loss_matches_trl_grpo_trainer_on_identical_inputs(tmp_path, loss_type):
    bundle = tiny_bundle(lora=False)
    trainer = trl_trainer(tmp_path, bundle, lambda completions, **_: [0.0] * len(completions), loss_type=loss_type,
                          scale_rewards="group")
    from trl.trainer.utils import nanstd
    trainer.beta = 0.1  # set after construction: with beta > 0 TRL would load a reference model by hub name
    trainer.current_gradient_accumulation_steps = 1
    gen = torch.Generator().manual_seed(0)
    prompt_ids, completion_ids = torch.randint(5, 200, (4, 5), generator=gen), torch.randint(5, 200, (4, 3), generator=gen)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 1, 1], [1, 0, 0]])
    rewards_ = torch.tensor([1.0, 0.0, 0.2, 0.7])
    trl_adv = (rewards_ - rewards_.view(-1, 2).mean(1).repeat_interleave(2)) / (
        nanstd(rewards_.view(-1, 2), dim=1).repeat_interleave(2) + 1e-4)
    ours_adv = grpo.group_advantages(rewards_, 2, "group")
    assert torch.allclose(ours_adv, trl_adv)
    attention = torch.cat([torch.ones(4, 5, dtype=torch.long), mask], 1)  # as TRL's _compute_loss builds it
    logp, _, _ = trainer._get_per_token_logps_and_entropies(
        bundle.model, torch.cat([prompt_ids, completion_ids], 1), attention, 3)
    old = logp.detach() + 0.3 * torch.randn(4, 3, generator=gen)  # ratios away from 1: clipping matters
    ref = logp.detach() + 0.2 * torch.randn(4, 3, generator=gen)
    inputs = {"prompt_ids": prompt_ids, "prompt_mask": torch.ones(4, 5, dtype=torch.long),
              "completion_ids": completion_ids, "completion_mask": mask, "advantages": ours_adv,
              "old_per_token_logps": old, "ref_per_token_logps": ref, "num_items_in_batch": mask.sum()}
    theirs = trainer._compute_loss(bundle.model, inputs)
    assert trainer.args.use_bias_correction_kl == GRPOConfig().use_bias_correction_kl
    norm = {"dapo": float(mask.sum()), "dr_grpo": 4.0 * 3}.get(loss_type)  # dr_grpo: N x max_completion_length
    ours = grpo.grpo_loss(logp, old, ref, ours_adv, mask.bool(), 0.1, 0.2, loss_type, norm,
                          trainer.args.use_bias_correction_kl)
    assert ours.loss.item() == pytest.approx(theirs.item(), rel=1e-5)
    assert ours.kl == pytest.approx(trainer._metrics["train"]["kl"][-1], rel=1e-5)
    assert ours.clip_ratio == pytest.approx(trainer._metrics["train"]["clip_ratio/region_mean"][-1])
    assert ours.clip_ratio > 0


def test_unknown_loss_types_and_scalings_are_refused():
    logp = torch.zeros(2, 2)
    with pytest.raises(ValueError, match="loss_type='gspo'"):
        grpo.grpo_loss(logp, logp, None, torch.ones(2), torch.ones(2, 2), 0.0, 0.2, "gspo")
    with pytest.raises(ValueError, match="dr_grpo"):
        grpo.grpo_loss(logp, logp, None, torch.ones(2), torch.ones(2, 2), 0.0, 0.2, "dr_grpo")  # no normalizer
    with pytest.raises(ValueError, match="loss_type"):
        GRPOConfig(loss_type="gspo")
    with pytest.raises(ValueError, match="scale_rewards"):
        grpo.group_advantages(torch.zeros(4), 2, "std")


def test_rewards_are_called_by_keyword_and_none_is_left_out_as_trl_does():
    seen = {}

    def length(completions, **kwargs):  # TRL's documented reward signature: no `prompts` parameter
        seen.update(kwargs)
        return [1.0, 2.0, None, None]

    def label(prompts, completions, label, **_):
        return label  # None where the row has no label: "does not apply"

    columns = {"label": [1.0, None, 5.0, None]}
    total, per_func = grpo.score([length, label], (1.0, 2.0), ["p"] * 4, ["a", "b", "c", "d"], columns,
                                 [[1], [2], [3], [4]], grpo.TrainerState(3, 10))
    # weighted nansum: [1 + 2 * 1, 2, 2 * 5, (nothing scored) NaN]
    assert total[:3].tolist() == [3.0, 2.0, 10.0] and torch.isnan(total[3])
    assert set(seen) == {"prompts", "completion_ids", "trainer_state", "label"}
    assert seen["trainer_state"].global_step == 3
    assert per_func["label"][0] == 1.0 and torch.isnan(per_func["length"][2])
    # groups [3, 2] and [10, NaN]: the NaN is left out of the mean; an unscored completion gets advantage 0
    assert grpo.group_advantages(total, 2, "none").tolist() == [0.5, -0.5, 0.0, 0.0]
    assert grpo.group_advantages(total, 2, "group")[2:].tolist() == [0.0, 0.0]  # std of one reward: NaN -> 0
    batch = grpo.Batch(["p", "p"], None, ["a", "b", "c", "d"], total, per_func, total, None)
    stats = grpo.batch_stats([batch], GRPOConfig(num_generations=2))
    assert stats["reward"] == pytest.approx(5.0) and stats["rewards/label/mean"] == pytest.approx(3.0)
    with pytest.raises(ValueError, match="'length' returned 4 rewards for 3"):
        grpo.score([length], (1.0,), ["p"] * 3, ["a", "b", "c"], {})


@pytest.mark.parametrize("scale_rewards", ["group", "batch", "none"])
def test_rewards_and_advantages_match_trl_over_a_generation_batch(tmp_path, scale_rewards):
    # two micro-batches of 4 completions (gradient_accumulation_steps=2): TRL scores and scales all 8 together
    bundle = tiny_bundle(lora=False)
    conrec = rewards.make_reward("conrec", rewards.RewardSpace(TABLE, EMB))

    def odd_items(completions, ground_truth, **kwargs):  # our reward, called with everything TRL passes
        return [None if TABLE.item_of(c) % 2 == 0 else r for c, r in
                zip(completions, conrec(completions=completions, ground_truth=ground_truth, **kwargs))]

    def level_sum(completions, completion_ids, **kwargs):  # TRL-style; None on items divisible by 3
        return [None if TABLE.item_of(c) % 3 == 0 else float(sum(i) % 5) for c, i in zip(completions, completion_ids)]

    trainer = trl_trainer(tmp_path, bundle, [odd_items, level_sum], scale_rewards=scale_rewards,
                          gradient_accumulation_steps=2, reward_weights=[1.0, 0.5])
    trainer.model.train()
    inputs = [row for row in toy_examples(4) for _ in range(2)]  # TRL's sampler repeats each prompt G times
    completions = [TABLE.strings[i] for i in (0, 1, 2, 5, 4, 7, 6, 6)]  # 0 and 6 unscorable; last group one item
    ids = [model_encode(bundle, c) for c in completions]
    prompt_ids = [bundle.tokenizer(r["prompt"])["input_ids"] for r in inputs]
    trainer._generate = lambda prompts: (prompt_ids, ids, None, completions, None, {}, None, None)
    out = trainer._generate_and_score_completions(inputs)
    columns = {k: [r[k] for r in inputs] for k in inputs[0] if k != "prompt"}
    total, per_func = grpo.score([odd_items, level_sum], (1.0, 0.5), [r["prompt"] for r in inputs], completions,
                                 columns, ids)
    ours = grpo.group_advantages(total, 2, scale_rewards)
    assert torch.allclose(ours, out["advantages"], atol=1e-6)
    batches = [grpo.Batch([r["prompt"] for r in inputs[s:s + 4:2]], None, completions[s:s + 4], total[s:s + 4],
                          {k: v[s:s + 4] for k, v in per_func.items()}, ours[s:s + 4], None) for s in (0, 4)]
    stats, logged = grpo.batch_stats(batches, GRPOConfig(num_generations=2)), trainer._metrics["train"]
    for key in ("reward", "reward_std", "rewards/odd_items/mean", "rewards/level_sum/mean"):
        assert stats[key] == pytest.approx(logged[key][-1], rel=1e-6), key


def model_encode(bundle, completion):
    from conrec_lib.llm.model import encode_completion
    return encode_completion(bundle.tokenizer, completion)


def test_batch_scaling_uses_the_std_of_the_whole_optimizer_step():
    bundle = tiny_bundle(lora=False)
    trie = decoding.SIDTrie.from_sids(bundle.tokenizer, TABLE.strings)
    calls = []

    def item(completions, completion_ids, trainer_state, **_):
        calls.append((len(completions), trainer_state))
        assert completion_ids == [model_encode(bundle, c) for c in completions]
        return [float(TABLE.item_of(c)) for c in completions]

    cfg = GRPOConfig(num_generations=4, prompts_per_batch=2, gradient_accumulation_steps=2, scale_rewards="batch",
                     beta=0.0)
    rows = toy_examples(4)
    batches = grpo.generation_batch(bundle, [rows[:2], rows[2:]], trie, [item], cfg, torch.Generator().manual_seed(0),
                                    None, grpo.TrainerState(2, 20))
    assert calls == [(16, grpo.TrainerState(2, 20))]  # one call for the whole generation batch, as TRL
    rewards_ = torch.cat([b.rewards for b in batches])
    whole = grpo.group_advantages(rewards_, 4, "batch")
    assert torch.equal(torch.cat([b.advantages for b in batches]), whole)
    per_micro = torch.cat([grpo.group_advantages(b.rewards, 4, "batch") for b in batches])
    assert not torch.allclose(whole, per_micro)  # what micro-batch scaling would have given


def test_shared_prompt_logprobs_equal_the_plain_ones_and_the_sampler():
    bundle = tiny_bundle(lora=False)
    trie = decoding.SIDTrie.from_sids(bundle.tokenizer, TABLE.strings)
    prompts = ["a short prompt\n", "a much longer prompt with more words in it\n"]
    ro = decoding.sample(bundle.model, bundle.tokenizer, prompts, trie, 3, 0.7, torch.Generator().manual_seed(0))
    comps = [c for group in ro.completions for c in group]
    ours = grpo.policy_logprobs(bundle.model, bundle.tokenizer, prompts, ro.prompt_index, comps, trie, 0.7)
    plain = decoding.token_logprobs(bundle.model, bundle.tokenizer, [prompts[i] for i in ro.prompt_index], comps,
                                    trie, 0.7)
    assert torch.allclose(ours.logprobs, plain.logprobs, atol=1e-5)
    assert torch.allclose(ours.logprobs, ro.logprobs, atol=1e-5)


@pytest.mark.parametrize("loss_type", grpo.LOSS_TYPES)
def test_every_loss_type_trains_with_a_trl_style_reward(loss_type):
    bundle = tiny_bundle(lora=False)
    trie = decoding.SIDTrie.from_sids(bundle.tokenizer, TABLE.strings)
    cfg = GRPOConfig(num_generations=2, prompts_per_batch=2, gradient_accumulation_steps=2, max_steps=1,
                     num_iterations=2, loss_type=loss_type, scale_rewards="batch")

    def item(completions, **kwargs):  # TRL-style: no prompts parameter; None for one item
        return [None if TABLE.item_of(c) == 4 else float(TABLE.item_of(c)) for c in completions]

    h = grpo.train(bundle, toy_examples(), [item], cfg, trie, progress=False).history
    assert np.isfinite(h[["loss", "reward", "reward_std", "rewards/item/mean"]].to_numpy()).all()


def test_two_lora_steps_move_lora_weights_not_base_weights_and_roll_out_valid_sids():
    bundle = tiny_bundle(lora=True)
    trie = decoding.SIDTrie.from_sids(bundle.tokenizer, TABLE.strings)
    before = {n: p.detach().clone() for n, p in bundle.model.named_parameters()}
    space = rewards.RewardSpace(TABLE, EMB)
    funcs = [rewards.make_reward("conrec", space), rewards.make_reward("next_negative_hit", space)]
    cfg = GRPOConfig(num_generations=4, prompts_per_batch=2, max_steps=2, learning_rate=1e-2, beta=0.1,
                     gradient_accumulation_steps=2)  # reference: the model with its adapter disabled
    result = grpo.train(bundle, toy_examples(), funcs, cfg, trie, progress=False)
    after = dict(bundle.model.named_parameters())
    moved = {n for n, p in after.items() if not torch.equal(p.detach(), before[n])}
    assert moved and all(after[n].requires_grad for n in moved)  # only trainable (LoRA, SID rows) moved
    assert any("lora_" in n for n in moved)
    h = result.history
    for col in ("reward", "reward_std", "rewards/conrec/mean", "rewards/next_negative_hit/mean",
                "frac_reward_zero_std", "kl", "clip_ratio", "loss"):
        assert col in h.columns and np.isfinite(h[col]).all(), col
    assert len(h) == 2
    batch = grpo.make_batch(bundle, toy_examples(2), trie, funcs, cfg, torch.Generator().manual_seed(1), None)
    assert set(batch.completions) <= set(TABLE.strings) and len(batch.completions) == 8


def test_config_errors_say_how_to_fix():
    with pytest.raises(ValueError, match="num_generations"):
        GRPOConfig(num_generations=1)
    with pytest.raises(ValueError, match="scale_rewards"):
        GRPOConfig(scale_rewards="std")
    with pytest.raises(ValueError, match="reward_weights"):
        grpo.train(tiny_bundle(False), toy_examples(), [lambda completions, **_: [0.0] * len(completions)],
                   GRPOConfig(reward_weights=(1.0, 2.0)), None, progress=False)

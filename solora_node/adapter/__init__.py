"""Sparse-and-orthogonal LoRA: the method as docs/method.md describes it.

config (spec.py) / layer (layer.py) / model (model.py) in PEFT's split, plus the pure math
(projection.py, masks.py, routing.py), data statistics (calibration.py), wire-neutral
payloads (delta.py, tensors.py, payload.py) and files (checkpoint.py, export.py).
"""

from solora_node.adapter.calibration import (
    calibrate,
    calibrated_masks,
    collect_input_stats,
    compute_codes,
    pooled_states,
    reset_block,
    seeded_random_masks,
)
from solora_node.adapter.delta import (
    apply_block,
    apply_codes,
    block_tensors,
    block_values,
    check_block,
    dense_block,
    extract_block,
    install_mask,
    mask_record,
    record_masks,
    set_block_tensors,
    set_block_values,
)
from solora_node.adapter.errors import (
    AdapterError,
    CheckpointError,
    DeltaError,
    MaskError,
    ProjectionError,
    UnknownTaskError,
)
from solora_node.adapter.export import export_peft
from solora_node.adapter.gate import ExpertGate
from solora_node.adapter.layer import SoLoraLinear
from solora_node.adapter.masks import collision_rate, mask_id
from solora_node.adapter.model import SoLoraModel, inject
from solora_node.adapter.projection import (
    orthogonal_projection,
    projection_fingerprint,
    target_layers,
    validate_federation,
)
from solora_node.adapter.routing import dual_basis, gate_weights, route, task_codes
from solora_node.adapter.spec import MaskSettings, SoLoraConfig
from solora_node.adapter.tensors import decode_values, encode_values
from solora_node.protocol.blocks import BlockDelta, BlockVersion, MaskRecord, RawTensor

__all__ = [
    "AdapterError",
    "BlockDelta",
    "BlockVersion",
    "CheckpointError",
    "DeltaError",
    "ExpertGate",
    "MaskError",
    "MaskRecord",
    "MaskSettings",
    "ProjectionError",
    "RawTensor",
    "SoLoraConfig",
    "SoLoraLinear",
    "SoLoraModel",
    "UnknownTaskError",
    "apply_block",
    "apply_codes",
    "block_tensors",
    "block_values",
    "calibrate",
    "calibrated_masks",
    "check_block",
    "collect_input_stats",
    "collision_rate",
    "compute_codes",
    "decode_values",
    "dense_block",
    "dual_basis",
    "encode_values",
    "export_peft",
    "extract_block",
    "gate_weights",
    "inject",
    "install_mask",
    "mask_id",
    "mask_record",
    "orthogonal_projection",
    "pooled_states",
    "projection_fingerprint",
    "record_masks",
    "reset_block",
    "route",
    "seeded_random_masks",
    "set_block_tensors",
    "set_block_values",
    "target_layers",
    "task_codes",
    "validate_federation",
]

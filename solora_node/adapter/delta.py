"""Task blocks as wire-neutral payloads: extract, validate-then-apply, masks, dense access.

A BlockDelta carries the block's current values (not a difference): per layer the entries
of B_t under the task's mask, in row-major order of the mask. Applying one replaces the
block. Everything received is validated in full before the first byte touches the model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from solora_node.adapter import masks as mask_ops
from solora_node.adapter.errors import DeltaError, MaskError
from solora_node.adapter.model import SoLoraModel
from solora_node.adapter.tensors import ENCODINGS, decode_values, encode_values
from solora_node.protocol.blocks import BlockDelta, BlockVersion, MaskRecord, RawTensor

CODE_ENCODING = "float32"  # codes are tiny and steer routing: keep them exact


def extract_block(
    so: SoLoraModel,
    task: str,
    version: BlockVersion | int,
    encoding: str = "float16",
    include_codes: bool = True,
) -> BlockDelta:
    """Task's block under its mask in `encoding`; codes ride along when known and asked for."""
    so.check_task(task)
    if encoding not in ENCODINGS:
        raise DeltaError(f"encoding {encoding!r} is not one of {list(ENCODINGS)}")
    if isinstance(version, int):
        version = BlockVersion(task=task, round=version, origin="")
    if version.task != task:
        raise DeltaError(f"version is for task {version.task!r}, block is {task!r}")
    task_masks = so.masks(task)
    layers: dict[str, RawTensor] = {}
    for name, layer in so.layers.items():
        values = layer.lora_B[task].detach()[task_masks[name].to(layer.lora_B[task].device)]
        layers[name] = encode_values(values, encoding)
    codes: dict[str, RawTensor] = {}
    if include_codes and task in so.codes:
        codes = {n: encode_values(c, CODE_ENCODING) for n, c in so.codes[task].items()}
    return BlockDelta(
        version=version,
        mask_id=mask_ops.mask_id(task_masks),
        encoding=encoding,
        layers=layers,
        codes=codes,
    )


def check_block(
    so: SoLoraModel,
    delta: BlockDelta,
    expected_mask_id: str | None = None,
    max_norm: float | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Validate a delta against the model; return decoded values and codes, or raise DeltaError.

    Checks: known task; mask_id equal to `expected_mask_id` (default: the mask installed for
    the task); encoding; exactly the adapted layers; per layer dtype, byte count and the
    number of values the mask keeps; finite values; optional L2 norm bound; codes' layers
    and sizes.
    """
    task = delta.version.task
    if task not in so.tasks:
        raise DeltaError(f"delta for unknown task {task!r}; federation tasks are {list(so.tasks)}")
    installed = so.mask_id(task)
    wanted = expected_mask_id if expected_mask_id is not None else installed
    if delta.mask_id != wanted:
        raise DeltaError(
            f"delta for task {task!r} has mask_id {delta.mask_id}, expected {wanted}; "
            "fetch the peer's MaskRecord and re-sync before applying its blocks"
        )
    if wanted != installed:
        raise DeltaError(
            f"mask {wanted} of task {task!r} is not installed (installed: {installed})"
        )
    if delta.encoding not in ENCODINGS:
        raise DeltaError(f"delta encoding {delta.encoding!r} is not one of {list(ENCODINGS)}")
    missing = sorted(set(so.layers) - set(delta.layers))
    extra = sorted(set(delta.layers) - set(so.layers))
    if missing or extra:
        raise DeltaError(
            f"delta for task {task!r} does not match the adapted layers "
            f"(missing {missing[:3]}, unexpected {extra[:3]})"
        )
    task_masks = so.masks(task)
    values: dict[str, torch.Tensor] = {}
    square_sum = 0.0
    for name, raw in delta.layers.items():
        if raw.dtype != delta.encoding:
            raise DeltaError(
                f"layer {name}: dtype {raw.dtype} differs from the delta's "
                f"encoding {delta.encoding}"
            )
        kept = int(task_masks[name].sum())
        if tuple(raw.shape) != (kept,):
            raise DeltaError(
                f"layer {name}: shape {tuple(raw.shape)}, the mask keeps ({kept},) values"
            )
        decoded = _decode(name, raw)
        if not bool(torch.isfinite(decoded).all()):
            raise DeltaError(f"layer {name}: values are not all finite")
        square_sum += float((decoded.to(torch.float64) ** 2).sum())
        values[name] = decoded
    if max_norm is not None and math.sqrt(square_sum) > max_norm:
        raise DeltaError(
            f"delta for task {task!r} has L2 norm {math.sqrt(square_sum):.4g} "
            f"above the bound {max_norm:.4g}"
        )
    return values, check_codes(so, delta)


def check_codes(so: SoLoraModel, delta: BlockDelta) -> dict[str, torch.Tensor]:
    """The routing codes a block (or a code card) carries, checked against the model."""
    codes: dict[str, torch.Tensor] = {}
    for name, raw in delta.codes.items():
        if name not in so.layers:
            raise DeltaError(f"routing code for unknown layer {name}")
        d_in = so.shapes[name][1]
        if raw.dtype not in ENCODINGS or tuple(raw.shape) != (d_in,):
            raise DeltaError(
                f"routing code of layer {name}: dtype {raw.dtype} shape {tuple(raw.shape)}, "
                f"expected a float vector of ({d_in},)"
            )
        code = _decode(name, raw)
        if not bool(torch.isfinite(code).all()) or float(code.norm()) == 0.0:
            raise DeltaError(f"routing code of layer {name} must be finite and non-zero")
        codes[name] = code
    return codes


def _decode(name: str, raw: RawTensor) -> torch.Tensor:
    try:
        return decode_values(raw)
    except DeltaError as err:
        raise DeltaError(f"layer {name}: {err}") from None


def apply_block(
    so: SoLoraModel,
    delta: BlockDelta,
    expected_mask_id: str | None = None,
    max_norm: float | None = None,
) -> None:
    """Replace task's block by the delta's values (zero off the mask), after full validation."""
    values, codes = check_block(so, delta, expected_mask_id, max_norm)
    task = delta.version.task
    set_block_values(so, task, values)
    if codes:
        so.codes[task] = {**so.codes.get(task, {}), **codes}


def apply_codes(so: SoLoraModel, card: BlockDelta) -> None:
    """A task's routing codes without its values (a code card): the gate sees the task."""
    codes = check_codes(so, card)
    so.codes[card.version.task] = {**so.codes.get(card.version.task, {}), **codes}


# -- masks -------------------------------------------------------------------------------
def mask_record(so: SoLoraModel, task: str) -> MaskRecord:
    """Task's mask as packed bits per layer, addressed by its mask_id."""
    task_masks = so.masks(task)
    layers = {}
    for name, mask in task_masks.items():
        packed = mask_ops.pack_mask(mask)
        layers[name] = RawTensor("uint8", (len(packed),), packed)
    shapes = {name: (int(m.shape[0]), int(m.shape[1])) for name, m in task_masks.items()}
    return MaskRecord(task=task, mask_id=mask_ops.mask_id(task_masks), layers=layers, shapes=shapes)


def record_masks(record: MaskRecord) -> dict[str, torch.Tensor]:
    """Unpack a MaskRecord into bool masks, verifying its content hash."""
    masks: dict[str, torch.Tensor] = {}
    for name, raw in record.layers.items():
        if raw.dtype != "uint8" or name not in record.shapes:
            raise MaskError(f"mask record layer {name}: expected uint8 packed bits with a shape")
        masks[name] = mask_ops.unpack_mask(raw.data, record.shapes[name])
    if mask_ops.mask_id(masks) != record.mask_id:
        raise MaskError(
            f"mask record for task {record.task!r}: content does not hash to its "
            f"mask_id {record.mask_id}"
        )
    return masks


def install_mask(so: SoLoraModel, record: MaskRecord) -> None:
    """Adopt a peer's mask for its task (checked: task, layers, shapes, hash, non-empty)."""
    so.check_task(record.task)
    masks = record_masks(record)
    if any(int(m.sum()) == 0 for m in masks.values()):
        raise MaskError(f"mask record for task {record.task!r} keeps no entry in some layer")
    so.set_masks(record.task, masks)


# -- flat access (aggregation) -----------------------------------------------------------
def block_values(so: SoLoraModel, task: str) -> dict[str, torch.Tensor]:
    """Per layer the float32 values of B_t under its mask, in mask order (what a delta holds)."""
    task_masks = so.masks(task)
    return {
        name: layer.lora_B[task].detach()[task_masks[name]].to(torch.float32).clone()
        for name, layer in so.layers.items()
    }


def set_block_values(so: SoLoraModel, task: str, values: Mapping[str, torch.Tensor]) -> None:
    """Inverse of block_values (e.g. after averaging peers' values); all checked first."""
    task_masks = so.masks(task)
    if set(values) != set(task_masks):
        raise DeltaError(f"values for task {task!r} must cover exactly the adapted layers")
    for name, vector in values.items():
        kept = int(task_masks[name].sum())
        if tuple(vector.shape) != (kept,):
            raise DeltaError(f"layer {name}: shape {tuple(vector.shape)}, the mask keeps ({kept},)")
        if not bool(torch.isfinite(vector).all()):
            raise DeltaError(f"layer {name}: values are not all finite")
    with torch.no_grad():
        for name, layer in so.layers.items():
            block = layer.lora_B[task]
            dense = torch.zeros(block.shape, dtype=block.dtype, device=block.device)
            dense[task_masks[name]] = values[name].to(dtype=block.dtype, device=block.device)
            block.copy_(dense)


def block_tensors(so: SoLoraModel, task: str) -> dict[str, torch.Tensor]:
    """Copies of B_t per layer, dense (d_out x r); zero off the mask."""
    so.check_task(task)
    return {name: layer.lora_B[task].detach().clone() for name, layer in so.layers.items()}


def set_block_tensors(so: SoLoraModel, task: str, tensors: Mapping[str, torch.Tensor]) -> None:
    """Write dense B_t per layer (all checked first); entries off the mask are forced to 0."""
    so.check_task(task)
    shapes = so.block_shapes()
    if set(tensors) != set(shapes):
        raise DeltaError(f"block for task {task!r} must cover exactly the adapted layers")
    for name, tensor in tensors.items():
        if tuple(tensor.shape) != shapes[name]:
            raise DeltaError(f"layer {name}: shape {tuple(tensor.shape)}, expected {shapes[name]}")
        if not bool(torch.isfinite(tensor).all()):
            raise DeltaError(f"layer {name}: values are not all finite")
    with torch.no_grad():
        for name, layer in so.layers.items():
            layer.lora_B[task].copy_(tensors[name].to(layer.lora_B[task]))
            layer.enforce_mask(task)


def dense_block(delta: BlockDelta, masks: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A block's values scattered into dense float32 tensors under `masks` (zero off them)."""
    result = {}
    for name, raw in delta.layers.items():
        block = torch.zeros(masks[name].shape, dtype=torch.float32)
        block[masks[name]] = decode_values(raw).to(torch.float32)
        result[name] = block
    return result

"""Errors of the adapter: each one names the layer, task or file and what was expected."""

from __future__ import annotations

from solora_node.errors import SoloraError


class AdapterError(SoloraError):
    """A problem with the SO-LoRA adapter a user or peer can fix."""


class ProjectionError(AdapterError):
    """The federation's rank slots do not fit an adapted layer, or no layer matches."""


class UnknownTaskError(AdapterError):
    """A task name that is not in the federation's task list."""


class MaskError(AdapterError):
    """A sparsity mask that does not fit the adapter (layers, shapes, content hash)."""


class DeltaError(AdapterError):
    """A task block from a peer that must not touch the model; nothing of it was applied."""


class CheckpointError(AdapterError):
    """An adapter checkpoint folder that is missing, incomplete or does not fit."""

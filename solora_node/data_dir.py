"""The files a node keeps in its data_dir, and finding its adapter from any of them.

Layout (docs/node.md): `adapter/` the latest model for `solora-node infer`,
`checkpoints/` the resumable state, `node.json` the bound ports, `summary.json` the last run.
Torch-free, so that commands can check a folder before loading a model.
"""

from __future__ import annotations

from pathlib import Path

from solora_node.errors import SoloraError

RUNTIME_INFO = "node.json"
SUMMARY = "summary.json"
ADAPTER_DIR = "adapter"  # inside node.data_dir: the latest model for `solora-node infer`
CHECKPOINT_DIR = "checkpoints"
ADAPTER_MANIFEST = "manifest.json"  # written by adapter.checkpoint.save_checkpoint


def find_adapter(folder: Path) -> Path:
    """The adapter folder `folder` means: itself, the adapter of a node's data_dir, or of
    the data_dir a `checkpoints/` folder belongs to. Else one line saying what to point at."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SoloraError(
            f"--checkpoint {folder}: no such folder; point it at a node's data_dir "
            f"(node.data_dir) or at the {ADAPTER_DIR}/ folder inside it"
        )
    candidates = [folder, folder / ADAPTER_DIR]
    if folder.name == CHECKPOINT_DIR:
        candidates.append(folder.parent / ADAPTER_DIR)
    for candidate in candidates:
        if (candidate / ADAPTER_MANIFEST).is_file():
            return candidate
    if (folder / RUNTIME_INFO).is_file() or (folder / CHECKPOINT_DIR).is_dir():
        raise SoloraError(
            f"--checkpoint {folder}: a node's data_dir without {ADAPTER_DIR}/ yet; the node "
            "writes it at its first checkpoint (after its first round)"
        )
    raise SoloraError(
        f"--checkpoint {folder}: no adapter here ({ADAPTER_DIR}/{ADAPTER_MANIFEST} or "
        f"{ADAPTER_MANIFEST}); point it at a node's data_dir (node.data_dir in its config, "
        f"e.g. /var/lib/solora-node) or at the {ADAPTER_DIR}/ folder inside it"
    )

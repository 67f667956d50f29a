"""Where a config value came from: relative paths in a file, and blame for a bad value.

A config file is read where it lives, not where the process runs: under systemd the
working directory is the state directory, so `tls/node.pem` in /etc/solora-node/node.yaml
means /etc/solora-node/tls/node.pem. Paths given in the environment or with `--set` are
typed in a shell and stay relative to the working directory, as a shell user expects.
A value that fails validation is blamed on the layer that set it last (file < env < --set).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# Every field of NodeConfig that names a file or folder (docs/operations.md, "Configure").
PATH_FIELDS: tuple[tuple[str, ...], ...] = (
    ("node", "data_dir"),
    ("model", "cache_dir"),
    ("model", "base"),
    ("task", "train_file"),
    ("task", "eval_file"),
    ("network", "tls", "ca_cert"),
    ("network", "tls", "cert"),
    ("network", "tls", "key"),
)
# model.base values that name a built-in model, not a folder.
BUILTIN_MODELS = frozenset({"default", "tiny"})


def _resolved(value: Any, base_dir: Path) -> Any:
    if not isinstance(value, str) or not value.strip():
        return value  # not a path: validation reports it with the file as its source
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else base_dir / path)


def resolve_relative_paths(data: Mapping[str, Any], base_dir: Path) -> dict[str, Any]:
    """A copy of a config file's mapping with its relative paths anchored at `base_dir`."""
    result: dict[str, Any] = dict(data)
    anchor = base_dir.expanduser().absolute()
    for dotted in PATH_FIELDS:
        parents: list[dict[str, Any]] = [result]
        for key in dotted[:-1]:
            child = parents[-1].get(key)
            if not isinstance(child, Mapping):
                break
            copy = dict(child)
            parents[-1][key] = copy
            parents.append(copy)
        else:
            section, field = parents[-1], dotted[-1]
            if field not in section:
                continue
            value = section[field]
            if dotted == ("model", "base") and isinstance(value, str) and value in BUILTIN_MODELS:
                continue
            section[field] = _resolved(value, anchor)
    return result


def _holds(layer: Mapping[str, Any], loc: Sequence[Any]) -> bool:
    node: Any = layer
    for part in loc:
        if not isinstance(node, Mapping) or str(part) not in node:
            return False
        node = node[str(part)]
    return True


def env_name(loc: Sequence[Any]) -> str:
    """The environment variable that sets the field at `loc` (SOLORA_TRAIN__LR)."""
    return "SOLORA_" + "__".join(str(p).upper() for p in loc)


def source_of(
    loc: Sequence[Any],
    file: Path | None,
    env: Mapping[str, Any],
    cli: Mapping[str, Any],
) -> str | None:
    """Who set the value at `loc` last: '--set a.b', 'environment SOLORA_A__B', the file, or
    None (defaults only). Checks made across sections (loc names a section or nothing) are
    blamed on the file, which is where such combinations are normally written."""
    parts = [p for p in loc if p != "__root__"]
    # A nested error (a list item) is set by whoever set the field that holds it.
    for depth in range(len(parts), 1, -1):
        prefix = parts[:depth]
        if _holds(cli, prefix):
            return "--set " + ".".join(str(p) for p in prefix)
        if _holds(env, prefix):
            return "environment " + env_name(prefix)
    return str(file) if file is not None else None

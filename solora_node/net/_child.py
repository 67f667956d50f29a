"""Entry point of a loopback peer process (see net.loopback), started as `python -m`.

The child needs only the wire stack and adapter/payload.py, but importing any
`solora_node.adapter.*` module first runs the adapter package's __init__, which
loads torch and peft (seconds per process). A child that no other code shares
can skip that: we register the package without running its __init__, so only
the submodules actually imported are loaded.
"""

from __future__ import annotations

import importlib.util
import sys
import types


def _register_adapter_package_lazily() -> None:
    if "solora_node.adapter" in sys.modules:
        return
    spec = importlib.util.find_spec("solora_node.adapter")
    if spec is None or spec.submodule_search_locations is None:
        return
    package = types.ModuleType("solora_node.adapter")
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__ = spec
    sys.modules["solora_node.adapter"] = package


if __name__ == "__main__":
    _register_adapter_package_lazily()
    from solora_node.net.loopback import main

    sys.exit(main(sys.argv[1:]))

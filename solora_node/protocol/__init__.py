"""Light message types of the federation: blocks, handshakes, status and refusal reasons.

Importable without torch, peft or transformers (a test keeps it so), so the wire,
the status command and the CLI load in a fraction of a second. See docs/architecture.md.
"""

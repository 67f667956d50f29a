"""Subcommands of `solora-node`; each module exposes register(subparsers)."""

"""solora-node: a peer-to-peer daemon for multi-task LLM fine-tuning with SO-LoRA."""

__version__ = "0.1.0"

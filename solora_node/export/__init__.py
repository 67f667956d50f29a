"""`solora-node export`: a checkpoint's experts as stock PEFT folders and merged models."""

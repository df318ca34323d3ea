"""Training: store-backed dataset, losses, the trainer loop, checkpoints and the `train` command."""

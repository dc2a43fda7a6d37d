"""Trainer, evaluation and metrics, run directories and checkpoints."""

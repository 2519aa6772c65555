"""Inference: test-time augmentation, saved predictions, ensembles and competition submissions."""

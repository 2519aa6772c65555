"""Training, adaptation, evaluation and prediction loops, and checkpoints."""

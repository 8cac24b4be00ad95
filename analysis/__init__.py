"""Read run directories and turn them into comparisons (no TensorFlow import)."""

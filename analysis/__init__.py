"""Scaling and energy analysis of run directories (never imports TensorFlow)."""

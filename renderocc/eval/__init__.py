"""Evaluation, prediction and visualisation of occupancy checkpoints."""

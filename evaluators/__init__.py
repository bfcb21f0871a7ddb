"""Evaluators: one module per task (kNN so far, used by the pretraining monitor)."""

"""Evaluation: golden datasets, metrics, the generators' runner, reports and regression checks."""

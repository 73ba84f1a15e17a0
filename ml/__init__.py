"""Segmentation and risk scoring as a pure library (polars, numpy, scikit-learn; no Dagster).

Arrives with the segmentation issue.
"""

"""Segmentation and risk scoring as a plain library (polars, numpy, scikit-learn).

Nothing here imports Dagster: the assets in ``orchestration.assets.models`` load the features,
call these functions and write what they return.
"""

"""Month arithmetic the models and publishing share: light, so that loading the platform's
definitions does not import scikit-learn (see ``orchestration/assets/models.py``)."""

from __future__ import annotations

from datetime import date


def add_month(month: date, k: int) -> date:
    y, m = divmod(month.year * 12 + month.month - 1 + k, 12)
    return date(y, m + 1, 1)


def training_month(month: date, every: int) -> date:
    """The month the model that scores ``month`` is trained as of, when it learns again every
    ``every`` months: the latest month at or before ``month`` whose number (year × 12 + month
    − 1) ``every`` divides. The same for every run of a month, in whatever order a backfill
    runs them."""
    return add_month(month, -((month.year * 12 + month.month - 1) % every))

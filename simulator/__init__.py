"""Source simulator: realistic extracts of the utility's six systems, with known defects.

``python -m simulator --accounts N --months M --end YYYYMM --seed S --out DIR --truth DIR``
"""

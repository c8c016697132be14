"""Uncertainty of the reported numbers: intervals over records and paired comparisons of methods."""

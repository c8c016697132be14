"""MEND's editor network, its edit-time gradient factors and its training (used by methods/MEND.py)."""

"""Slicing: the holdout (newest rows, cut first) and the slice strategies that pick training rows.

``base`` holds the holdout, the ``SliceStrategy`` contract and its registry; ``strategies`` the
built-in strategies (all, recent, window, bootstrap, expanding, segment).
"""

"""Tests of the continuous loop: scorecards and drift."""

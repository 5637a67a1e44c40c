"""Tests of gateway/outputs/."""

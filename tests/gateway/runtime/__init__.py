"""Tests of gateway/runtime/."""

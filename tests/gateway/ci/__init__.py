"""Tests of gateway/ci/."""

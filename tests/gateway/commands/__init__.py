"""Tests of gateway/commands/."""

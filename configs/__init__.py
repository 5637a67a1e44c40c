"""The shipped profiles and catalogs, installed as package data (``telemetry_configs``)."""

"""The device simulator: a stand-in microcontroller that speaks the configured frame profile."""

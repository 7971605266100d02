"""keymanagers."""

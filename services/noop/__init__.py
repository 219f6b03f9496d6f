"""A service with only health and reflection: proves the platform wiring end to end."""

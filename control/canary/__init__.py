"""Canary releases: the service, its guard's verdict and loop, and its HTTP routes."""

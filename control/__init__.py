"""The flowfleet control plane: HTTP API, CLI and rollout logic."""

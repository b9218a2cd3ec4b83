"""Tool components: small nodes an agent can call (tool mode) that also work as ordinary nodes."""

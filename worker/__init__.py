"""A flowfleet replica: serves flows and hot-swaps them from Redis."""

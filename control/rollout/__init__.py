"""The rollout machinery: two-phase cutover, replica ACKs and convergence, and the rollback guard."""

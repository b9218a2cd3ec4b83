"""`flowfleet up`: a whole local cluster (Redis, control plane, replicas on one port) as one process tree."""

"""How runs are split and counted: canary bucketing and per-version run statistics (pure)."""

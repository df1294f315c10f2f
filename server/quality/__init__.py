"""Model quality in production: input drift against a reference profile (drift.py), feedback scoring."""

"""Persistent fine-tuning jobs: tables, the job store (claims with leases) and workers."""

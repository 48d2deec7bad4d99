"""Small shared helpers (files, seeding, threads)."""

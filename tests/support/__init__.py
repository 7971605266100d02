"""Test support: real processes and a throwaway PostgreSQL server."""

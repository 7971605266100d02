"""Delivery: what each server should have (the cache) and how it learns of changes (notifiers)."""

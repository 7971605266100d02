"""Service layer: use cases over a unit of work. Entry points (HTTP, CLI) call only these."""

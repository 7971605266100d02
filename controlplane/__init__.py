"""spirl control plane: validated KeyManager config delivered live to SPIFFE trust domain servers."""

__version__ = "0.1.0"

"""trust_domain_server."""

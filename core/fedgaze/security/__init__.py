"""Transport security: TLS certificates and SuperNode authentication keys."""

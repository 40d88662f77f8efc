"""The native local stack: one definition (localstack/services.toml), run under supervisord (make local-up)."""

"""Gateway application factory (placeholder until the gateway issue lands)."""

"""HTTP layer: blueprints that parse, call a service, and serialize."""

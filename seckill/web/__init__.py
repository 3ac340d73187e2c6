"""The HTTP front door: app factory, middleware and thin handlers."""

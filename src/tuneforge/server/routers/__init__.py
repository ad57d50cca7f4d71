"""HTTP routers, one per resource: thin over ``server.services``."""

"""What the routers do, without HTTP: one module per resource."""

"""HTTP: the simulator server (and, later, the API and dashboard)."""

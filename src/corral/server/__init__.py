"""HTTP: the dashboard and its API, operator endpoints, metrics, auth and the simulator."""

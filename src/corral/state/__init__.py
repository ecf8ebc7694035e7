"""Shared state backends for many processes (Redis). Adapters: imported only on use."""

"""Durable execution adapter (DBOS). Import `corral.engine.dbos` only where durability is needed."""

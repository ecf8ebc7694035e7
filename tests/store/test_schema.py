"""Every table is defined in `corral.store.schema`, and nowhere else."""

from __future__ import annotations

import importlib
import pkgutil

import sqlalchemy as sa

import corral.store
from corral.store import schema


def test_every_table_in_the_metadata_is_defined_in_the_schema_module():
    for info in pkgutil.iter_modules(corral.store.__path__, "corral.store."):
        importlib.import_module(info.name)  # a module defining its own table would add it now
    in_schema = {value.name for value in vars(schema).values() if isinstance(value, sa.Table)}
    assert set(schema.metadata.tables) == in_schema
    assert {name for name in in_schema if not name.startswith("corral_")} == set()


def test_the_schema_names_every_table_it_defines():
    tables = {name for name, value in vars(schema).items() if isinstance(value, sa.Table)}
    assert tables <= set(schema.__all__)

"""SQL storage adapter (SQLAlchemy): runs, spans, journal, effects, caches and operator state.

Modules, lowest first (each imports only those before it; `make lint` checks it):
`schema` (every table), `_rows` (column values), `_writer` (group commit), `sql` (`SqlStore`: runs,
spans, journal, effects, caches, alerts, retention), `queries` (read-side reports), `audit` (the
hash-chained audit log), `humans` / `controls` / `tokens` (operator state, each audited), `ops`
(`Ops`: the four together, as the app holds them).
"""

"""SQL storage adapter (SQLAlchemy): runs, spans, journal, effects."""

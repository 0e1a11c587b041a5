"""A service's ClickHouse settings: the official ``clickhouseSettings`` operations, checked
by the engine itself and applied to every query of the service."""

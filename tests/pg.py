"""The tests' PostgreSQL: ``bench.pg`` (shared with the benchmarks, so ``bench/`` never imports
``tests/``)."""

from bench.pg import fresh_database, postgres_server

__all__ = ["fresh_database", "postgres_server"]

"""Storage: the DuckDB file the proxy process owns, its migrations, the log writer and queries."""

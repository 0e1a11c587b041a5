"""Services: ClickHouse services (embedded engines or attached servers), their lifecycle, the
Query API and its binding, and which process runs each engine (leases)."""

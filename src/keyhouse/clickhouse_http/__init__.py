"""Each running service's ClickHouse HTTP interface: its own HTTPS port, spoken as a ClickHouse
server speaks it (``interface``), guarded against connection floods (``guard``)."""

"""Services' metrics for Prometheus, as ClickHouse Cloud serves them: a service's and an
organization's scrape, and HTTP service discovery."""

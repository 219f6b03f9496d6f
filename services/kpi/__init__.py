"""The KPI context: stream processors that turn every context's events into facts in ClickHouse."""

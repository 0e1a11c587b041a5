"""What services use, day by day, and what it costs: the official ``usageCost`` operation."""

"""Label-coverage (data QA) report over a ray store."""

"""Operations and tooling (`cem.ops`): the CLI and what it runs besides the roles — local
infrastructure, the demo, benchmarks, chaos runs, reports and backtests. Nothing in the
pipeline imports this package; it imports every other."""

"""`python -m cem` runs the `cem` command."""
from cem.ops.cli import main

main()

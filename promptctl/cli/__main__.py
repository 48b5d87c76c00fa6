"""`python -m promptctl.cli` runs the command line."""

from promptctl.cli.app import main

main()

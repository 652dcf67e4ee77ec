"""``python -m jace`` (and ``torchrun -m jace``) runs the CLI."""

from jace.cli import main

main()

"""python -m zmqflow: the CLI."""

from zmqflow.cli import app

app()

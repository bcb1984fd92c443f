"""python -m zmqflow.streams: the streams device and its commands, standalone."""

from zmqflow.streams.cli import app

app()

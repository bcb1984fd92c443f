"""Security: CURVE key files and the forwarder's key-based roles.

``keys`` reads and writes key files (pyzmq's zmq.auth format). The
forwarder's side: ``policy`` decides CURVE or plain from the settings and
sets up every bound socket; ``authenticator`` answers ZAP requests in a
thread from one allow-list folder per role and reloads them; ``monitor``
logs handshakes from the socket monitor; ``metrics`` exports their counts.
The connecting side: ``peer`` (a client's or worker's keys) and
``handshake`` (refusals seen from the socket monitor). See docs/security.md.
"""

from zmqflow.security.keys import KeyFileError, generate, load_public, load_secret

__all__ = ["KeyFileError", "generate", "load_public", "load_secret"]

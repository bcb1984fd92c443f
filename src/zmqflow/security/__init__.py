"""Security: CURVE key files and the forwarder's key-based roles.

``keys`` reads and writes key files (pyzmq's zmq.auth format); ``policy``
says which key may use which ZAP domain and reloads the allow-lists;
``authenticator`` answers ZAP requests in a thread by that policy; see
docs/security.md.
"""

from zmqflow.security.keys import KeyFileError, generate, load_public, load_secret

__all__ = ["KeyFileError", "generate", "load_public", "load_secret"]

"""Errors the prefect-zmqflow tasks raise.

Contract: each names what was tried and what came back, so that a failed
task run's message says enough to act on without reading logs.
"""

from __future__ import annotations


class ZmqflowError(Exception):
    """Base class of prefect-zmqflow errors."""


class ForwarderUnreachableError(ZmqflowError):
    """No forwarder answered at the block's endpoint after every attempt."""


class UnknownServiceError(ZmqflowError):
    """The forwarder refused the batch: no worker has ever offered the service."""


class BatchRefusedError(ZmqflowError):
    """The forwarder refused items for another reason (too large, queue full...)."""


class BatchFailedError(ZmqflowError):
    """Items of the batch failed in the workers; ``failures`` holds them all."""

    def __init__(self, service: str, total: int, failures: list[tuple[str, str]]) -> None:
        shown = "; ".join(f"{key}: {error}" for key, error in failures[:5])
        more = f" (and {len(failures) - 5} more)" if len(failures) > 5 else ""
        super().__init__(
            f"{len(failures)} of {total} items failed in service {service!r}: {shown}{more}"
        )
        self.service = service
        self.failures = failures

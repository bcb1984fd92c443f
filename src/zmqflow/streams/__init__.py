"""Durable event streams (issue 21): events stored before they are confirmed.

One concept per module:

- ``wire``: the streams message family (signature ``ZFS1``), frames to
  messages and back, byte-exact (docs/streams.md, docs/protocol-vectors/streams/).
- ``store``: the stream store, SQLite in WAL mode with group commit: events
  under a per-stream sequence number, retention by age, count and bytes,
  the publish dedup window, and durable subscribers' positions.
- ``subscription``: one subscriber's delivery state (position, acks above
  it, events in flight, redelivery deadlines), socket-free.
- ``core``: the device's rules, socket-free: messages in, replies out, on a
  clock the caller passes (tests use a fake one).
- ``device``: the ZeroMQ ROUTER around the core, with the forwarder's security.
- ``client``: confirmed publish and durable subscribers (sync and asyncio).
- ``cli``: a typer sub-app (``events``, ``publish --confirm``, ``subscribe --durable``).
- ``metrics``: prometheus-client collectors of streams and subscribers.
- ``settings``: the device's settings (ZMQFLOW_STREAMS_* and friends).
"""

"""The local server of Warped Diffusion and its client.

Layout (see ``server/PROTOCOL.md`` for the wire format):

- ``protocol``: envelope, binary array parts, size limits, error codes (pyzmq, msgpack, numpy).
- ``client``: the thread-safe client library hosts use (pyzmq, msgpack, numpy; never torch).
- ``keys``: ZeroMQ CURVE key files (both sides).
- ``shots``: a submit body -> a validated shot (inputs, request, content-hash key).
- ``cache``: per-shot on-disk frames, inputs and resume state.
- ``engine``: models loaded once, a ClipRestorer per shot (torch imported on first use).
- ``worker``: the one GPU worker thread and its queue.
- ``registry``: active shots, their subscribers and waiting ``get_frame`` requests.
- ``handlers``: one function per request type.
- ``app``: the ROUTER socket loop; ``commands``: ``warpdiff serve``; ``bench``: its benchmark.
- ``testing``: loopback servers, subprocess servers and raw sockets for tests.

This file imports nothing, so that ``import server.client`` stays free of torch.
"""

from __future__ import annotations

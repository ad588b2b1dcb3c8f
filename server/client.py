"""The client library hosts use: pyzmq, msgpack and numpy only (never torch, never warpcore).

Thread-safe by design: one background I/O thread owns the DEALER socket. Any thread (a render
thread of a timeline effect, a UI thread) sends through a lock-guarded inproc PUSH socket to
that I/O thread, which forwards to the server without copying the frame buffers, and routes
what comes back by message id: replies to the waiting caller, events to the shot's stream.

    with Client("tcp://127.0.0.1:5557") as c:
        key = c.submit(Shot(frames, masks=mattes, request={"task": "inpaint", "steps": 20}))
        for ev in c.events(key):            # queued / started / progress / frame / finished
            if ev.kind == "frame":
                write(ev.frame, ev.image)
        frame_7 = c.get_frame(key, 7)       # from the server's cache, any thread, any order
"""

from __future__ import annotations

import itertools
import os
import queue
import threading
import uuid
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zmq

from server.keys import CurveKeys
from server.protocol import Limits, Message, ProtocolError, array_part, decode, encode, new_id
from server.protocol import unpack_array as _unpack

DEFAULT_ADDRESS = "tcp://127.0.0.1:5557"
TERMINAL = ("finished", "cancelled", "error")
MAX_OUTGOING = 10_000
BATCH_BYTES = 32 * 2**20  # upload(): frames (and mattes) per add_frames when batch is None
MAX_WINDOW = 4  # upload(): batches in flight at most, whatever the server allows
_CLIENT_LIMITS = Limits(max_parts=1 << 20, max_part_bytes=1 << 40, max_total_bytes=1 << 42)


def normalize_address(address: str) -> str:
    """A ZMQ endpoint from what a user types: ``localhost:5557`` means ``tcp://localhost:5557``.

    Accepted: ``tcp://host:port``, ``ipc://path``, ``inproc://name``, or ``host:port``.
    """
    if not isinstance(address, str) or not address.strip():
        raise ValueError(f"server address: expected host:port or tcp://host:port, got {address!r}")
    address = address.strip()
    if "://" in address:
        scheme = address.split("://", 1)[0]
        if scheme not in ("tcp", "ipc", "inproc"):
            raise ValueError(
                f"server address: unknown scheme {scheme!r} in {address!r}; accepted: tcp://, "
                "ipc://, inproc:// or host:port"
            )
        return address
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(
            f"server address: {address!r} is not host:port (e.g. localhost:5557) or tcp://host:port"
        )
    return f"tcp://{address}"


class ServerError(Exception):
    """An ``error`` reply: ``code`` (see PROTOCOL.md) and the server's message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


@dataclass
class Shot:
    """What to restore: frames (H, W, 3|4) or file paths, mattes or 'alpha', parameters."""

    request: dict[str, Any]
    frames: Sequence[np.ndarray] = ()
    masks: Sequence[np.ndarray] | str | None = None  # one (H, W[, 1]) matte per frame, 'alpha'
    paths: dict[str, str | None] | None = None  # {"frames": path, "masks": path} on the server


@dataclass
class ShotEvent:
    """An event of a shot. ``image``: the finished frame (frame events of a streamed shot)."""

    kind: str
    key: str
    frame: int = -1
    n_frames: int = 0
    step: int = -1
    n_steps: int = 0
    eta_s: float | None = None
    message: str = ""
    image: np.ndarray | None = None
    preview: np.ndarray | None = None
    body: dict[str, Any] = field(default_factory=dict)


@dataclass
class Reply:
    """A reply: its type, body and binary parts; ``id`` is the id of the request."""

    type: str
    body: dict[str, Any]
    parts: list[memoryview]
    id: str = ""
    stream: queue.SimpleQueue | None = None  # the request's event queue (stream=True)

    def array(self, desc: Any, what: str = "image") -> np.ndarray:
        return _unpack(desc, self.parts, what)


class Client:
    """A connection to a warpdiff server, usable from any number of threads."""

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        curve_keys: CurveKeys | str | os.PathLike[str] | None = None,
        timeout: float = 30.0,
        connect_timeout: float | None = None,
    ) -> None:
        """``address``: ``tcp://host:port`` or ``host:port``. With ``connect_timeout``, a
        ``hello`` must answer within that many seconds, else :class:`ConnectionError` (the
        client is closed again): an unreachable server is reported at once."""
        self.address, self.timeout = normalize_address(address), timeout
        self._io_error: BaseException | None = None
        self._context = zmq.Context()
        self._inbox = f"inproc://warpdiff-client-{uuid.uuid4().hex}"
        self._lock = threading.Lock()
        self._pending: dict[Any, queue.SimpleQueue] = {}
        self._streams: dict[Any, queue.SimpleQueue] = {}
        self._key_stream: dict[str, queue.SimpleQueue] = {}
        self._closed = False
        self.last_submit: dict[str, Any] = {}
        keys = (
            CurveKeys.from_dir(curve_keys)
            if isinstance(curve_keys, (str, os.PathLike))
            else curve_keys
        )
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._io, args=(keys, ready), name="warpdiff-client-io", daemon=True
        )
        self._thread.start()
        ready.wait()
        self._push = self._context.socket(zmq.PUSH)
        self._push.setsockopt(zmq.LINGER, 0)
        self._push.connect(self._inbox)
        if self._io_error is not None:
            self.close()
            raise ConnectionError(f"cannot connect to {self.address}: {self._io_error}")
        if connect_timeout is not None:
            try:
                self.hello(timeout=connect_timeout)
            except TimeoutError:
                self.close()
                raise ConnectionError(
                    f"no warpdiff server answers at {self.address} (waited "
                    f"{connect_timeout:g} s); start one with `warpdiff serve` or check the address"
                ) from None
            except BaseException:
                self.close()
                raise

    # -- lifecycle ----------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the I/O thread and close the sockets (pending calls raise ``ConnectionError``)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            # An empty message tells the I/O thread to stop (a dead thread needs no telling,
            # and a send to it would block: nobody reads the inbox any more).
            if self._thread.is_alive() and self._push.poll(1000, zmq.POLLOUT):
                self._push.send_multipart([b""], zmq.NOBLOCK)
        self._thread.join(5.0)
        self._push.close(0)
        self._context.term()
        self._wake_all()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the I/O thread -----------------------------------------------------------------------
    def _io(self, keys: CurveKeys | None, ready: threading.Event) -> None:
        """The I/O thread. Whatever ends it (a stop, an error), every waiting caller wakes up."""
        try:
            self._io_loop(keys, ready)
        except BaseException as exc:  # noqa: BLE001 -- reported to every waiter, never lost
            self._io_error = exc
        finally:
            ready.set()
            self._wake_all()

    def _wake_all(self) -> None:
        """Wake every caller waiting for a reply or an event (they raise ConnectionError)."""
        with self._lock:
            queues = [*self._pending.values(), *self._streams.values()]
            queues += list(self._key_stream.values())
            self._pending.clear()
            self._streams.clear()
        for q in queues:
            q.put(None)

    def _io_loop(self, keys: CurveKeys | None, ready: threading.Event) -> None:
        inbox = self._context.socket(zmq.PULL)
        inbox.bind(self._inbox)
        dealer = self._context.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        try:
            if keys is not None:
                dealer.curve_publickey, dealer.curve_secretkey = keys.public, keys.secret
                dealer.curve_serverkey = keys.server_public
            dealer.connect(self.address)
        except BaseException:
            inbox.close(0)
            dealer.close(0)
            raise
        ready.set()
        poller = zmq.Poller()
        poller.register(inbox, zmq.POLLIN)
        poller.register(dealer, zmq.POLLIN)
        outgoing: deque[list[Any]] = deque()  # what the DEALER could not take yet
        try:
            while True:
                events = dict(poller.poll())
                if inbox in events and not self._forward(inbox, outgoing):
                    return
                if dealer in events and events[dealer] & zmq.POLLIN:
                    self._receive(dealer)
                self._flush(dealer, outgoing)
                poller.modify(dealer, zmq.POLLIN | (zmq.POLLOUT if outgoing else 0))
        finally:
            inbox.close(0)
            dealer.close(0)

    def _forward(self, inbox: zmq.Socket, outgoing: deque[list[Any]]) -> bool:
        """Move user threads' messages to ``outgoing``; False when asked to stop."""
        while True:
            try:
                frames = inbox.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return True
            if len(frames) == 1 and len(frames[0]) == 0:
                return False
            if len(outgoing) >= MAX_OUTGOING:  # the server is gone for good: fail at once
                self._fail_locally(
                    frames[0],
                    "unreachable",
                    f"cannot send to {self.address}: {MAX_OUTGOING} messages already wait for "
                    "the server (is it running?)",
                )
                continue
            outgoing.append(frames)

    def _flush(self, dealer: zmq.Socket, outgoing: deque[list[Any]]) -> None:
        """Send what the DEALER takes now, without ever blocking the I/O thread."""
        while outgoing:
            try:
                dealer.send_multipart(outgoing[0], zmq.NOBLOCK, copy=False)
            except zmq.Again:  # no connection yet, or its pipe is full: POLLOUT says when
                return
            outgoing.popleft()

    def _fail_locally(self, envelope: Any, code: str, message: str) -> None:
        try:
            msg_id = decode([envelope], _CLIENT_LIMITS).id
        except ProtocolError:
            return
        self._dispatch(Message("error", new_id(), msg_id, {"code": code, "message": message}))

    def _receive(self, dealer: zmq.Socket) -> None:
        while True:
            try:
                frames = dealer.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            try:
                msg = decode(frames, _CLIENT_LIMITS)
            except ProtocolError:
                continue  # not ours to answer; a server never sends these
            self._dispatch(msg)

    def _dispatch(self, msg: Message) -> None:
        with self._lock:
            if msg.type == "event":
                target = self._streams.get(msg.parent)
                if msg.body.get("kind") in TERMINAL:  # the last event of this stream
                    self._streams.pop(msg.parent, None)
            else:
                target = self._pending.pop(msg.parent, None)
        if target is not None:
            target.put(msg)

    # -- requests -----------------------------------------------------------------------------
    def _send(self, type: str, body: dict[str, Any], parts: Sequence[Any], msg_id: str) -> None:
        frames = encode(type, body, id=msg_id, parts=parts)
        with self._lock:
            if self._closed:
                raise ConnectionError("the client is closed")
            if not self._thread.is_alive():
                raise ConnectionError(self._closed_reason("before sending"))
            self._push.send_multipart(frames, copy=False)

    def request(
        self,
        type: str,
        body: dict[str, Any] | None = None,
        parts: Sequence[Any] = (),
        timeout: float | None = None,
        stream: bool = False,
    ) -> Reply:
        """Send a request and wait for its reply; an ``error`` reply raises :class:`ServerError`."""
        return self._await(self._post(type, body, parts, stream), timeout)

    def _post(
        self,
        type: str,
        body: dict[str, Any] | None = None,
        parts: Sequence[Any] = (),
        stream: bool = False,
    ) -> _Posted:
        """Send a request without waiting; :meth:`_await` (or :meth:`_forget`) its reply."""
        events: queue.SimpleQueue | None = queue.SimpleQueue() if stream else None
        posted = _Posted(type, new_id(), queue.SimpleQueue(), events)
        with self._lock:
            self._pending[posted.id] = posted.answer
            if posted.events is not None:
                self._streams[posted.id] = posted.events
        try:
            self._send(type, body or {}, parts, posted.id)
        except BaseException:
            self._forget(posted)
            raise
        return posted

    def _await(self, posted: _Posted, timeout: float | None = None) -> Reply:
        try:
            msg = self._wait(posted.answer, timeout, posted.type)
        except BaseException:
            self._forget(posted)
            raise
        return Reply(msg.type, msg.body, msg.parts, posted.id, posted.events)

    def _forget(self, posted: _Posted) -> None:
        """A posted request whose reply will not be awaited: it is dropped when it comes."""
        with self._lock:
            self._pending.pop(posted.id, None)
            self._streams.pop(posted.id, None)

    def _wait(self, answer: queue.SimpleQueue, timeout: float | None, what: str) -> Message:
        limit = self.timeout if timeout is None else timeout
        try:
            msg = answer.get(timeout=limit)
        except queue.Empty:
            raise TimeoutError(
                f"no reply to {what} from {self.address} within {limit:g} s: is the server "
                "running (`warpdiff serve`)? With CURVE keys, are this host's keys allowed?"
            ) from None
        if msg is None:
            raise ConnectionError(self._closed_reason("while waiting"))
        if msg.type == "error":
            raise ServerError(str(msg.body.get("code")), str(msg.body.get("message")))
        return msg

    def _closed_reason(self, when: str) -> str:
        if self._io_error is not None:
            return f"the connection to {self.address} failed {when}: {self._io_error}"
        return f"the client was closed {when}"

    # -- the API ------------------------------------------------------------------------------
    def hello(self, timeout: float | None = None) -> dict[str, Any]:
        """Server and protocol versions, models, device and free memory, queue."""
        return self.request("hello", {"client": "warpdiff-client"}, timeout=timeout).body

    def heartbeat(self, timeout: float | None = None) -> dict[str, Any]:
        return self.request("heartbeat", timeout=timeout).body

    def status(self, key: str | None = None) -> dict[str, Any]:
        return self.request("status", {"key": key}).body

    def list_shots(self) -> list[dict[str, Any]]:
        return self.request("list_shots").body["shots"]

    def shutdown(self) -> dict[str, Any]:
        return self.request("shutdown").body

    def cancel(self, key: str) -> dict[str, Any]:
        return self.request("cancel", {"key": key}).body

    def submit(
        self,
        shot: Shot,
        *,
        subscribe: bool = True,
        stream: bool = True,
        previews: bool = False,
        dtype: str = "float32",
        timeout: float | None = None,
    ) -> str:
        """Send a shot; returns its key. With ``subscribe``, read its events with :meth:`events`.

        A timeline effect that only asks for single frames passes ``subscribe=False`` and calls
        :meth:`get_frame`.
        """
        body: dict[str, Any] = {
            "request": dict(shot.request),
            "subscribe": subscribe,
            "stream": stream,
            "previews": previews,
            "dtype": dtype,
        }
        parts: list[Any] = []
        if shot.paths is not None:
            body["paths"] = dict(shot.paths)
        else:
            body["frames"] = [_add(parts, f) for f in shot.frames]
        if isinstance(shot.masks, str):
            body["masks"] = shot.masks
        elif shot.masks is not None:
            body["masks"] = [_add(parts, m) for m in shot.masks]
        reply = self.request("submit", body, parts, timeout, stream=subscribe)
        self._bind_stream(reply, subscribe)
        self.last_submit = reply.body  # the whole submit_reply (state, position, check_s...)
        return reply.body["key"]

    def upload(
        self,
        request: dict[str, Any],
        frames: Iterable[np.ndarray],
        n_frames: int,
        masks: Iterable[np.ndarray] | str | None = None,
        *,
        batch: int | None = None,
        subscribe: bool = True,
        stream: bool = True,
        dtype: str = "float32",
        timeout: float | None = None,
    ) -> str:
        """Send a long shot in batches (``open_shot``, ``add_frames``..., ``start_shot``).

        ``batch``: frames per ``add_frames``; None: as many as fit in :data:`BATCH_BYTES`
        (frames and mattes), at least one. As many batches as the server allows
        (``open_shot``'s ``batch_limit``, at most :data:`MAX_WINDOW`) are in flight while the
        next one is read, so ``frames`` (and ``masks``) may be generators: about
        ``(batch_limit + 1) * batch`` frames are held here and ``batch_limit * batch`` on the
        server at a time. Returns the shot key, like :meth:`submit`.
        """
        frames = iter(frames)
        first = np.asarray(next(frames))
        mattes = None if masks is None or isinstance(masks, str) else iter(masks)
        opened = {
            "request": dict(request),
            "n_frames": n_frames,
            "height": first.shape[0],
            "width": first.shape[1],
            "channels": first.shape[2] if first.ndim == 3 else 1,
            "dtype": str(array_part(first, 0)[0]["dtype"]),
        }
        if masks is not None:
            opened["masks"] = masks if isinstance(masks, str) else "masks"
        reply = self.request("open_shot", opened, timeout=timeout).body
        token = reply["upload"]
        window = min(max(1, int(reply.get("batch_limit") or 1)), MAX_WINDOW)
        if batch is None:
            matte_bytes = first.shape[0] * first.shape[1] * 4 if mattes is not None else 0
            batch = max(1, BATCH_BYTES // max(1, first.nbytes + matte_bytes))
        pending = itertools.chain([first], frames)
        in_flight: deque[_Posted] = deque()
        sent = 0
        try:
            while chunk := list(itertools.islice(pending, batch)):
                parts: list[Any] = []
                body: dict[str, Any] = {"upload": token, "start": sent}
                body["frames"] = [_add(parts, f) for f in chunk]
                if mattes is not None:
                    body["masks"] = [_add(parts, next(mattes)) for _ in chunk]
                if len(in_flight) >= window:  # the oldest batch's reply frees its slot
                    self._await(in_flight.popleft(), timeout)
                in_flight.append(self._post("add_frames", body, parts))
                sent += len(chunk)
            while in_flight:
                self._await(in_flight.popleft(), timeout)
        finally:
            for posted in in_flight:  # an error or a bad frame: the rest is not awaited
                self._forget(posted)
        options = {"upload": token, "subscribe": subscribe, "stream": stream, "dtype": dtype}
        reply = self.request("start_shot", options, timeout=timeout, stream=subscribe)
        self._bind_stream(reply, subscribe)
        return reply.body["key"]

    def subscribe(
        self,
        key: str,
        *,
        resume: bool = True,
        start: int = 0,
        stream: bool = True,
        previews: bool = False,
        dtype: str = "float32",
    ) -> dict[str, Any]:
        """Listen to a shot submitted elsewhere (or before a restart); ``resume`` restarts it."""
        body = {
            "key": key,
            "resume": resume,
            "from": start,
            "stream": stream,
            "previews": previews,
            "dtype": dtype,
        }
        reply = self.request("subscribe", body, stream=True)
        self._bind_stream(reply, True)
        return reply.body

    def _bind_stream(self, reply: Reply, subscribed: bool) -> None:
        # The request's own queue, not a look-up: a short replay can end (and its stream be
        # dropped from ``_streams``) before this thread sees the reply.
        if subscribed and reply.stream is not None:
            with self._lock:
                self._key_stream[reply.body["key"]] = reply.stream

    def events(self, key: str, timeout: float | None = None) -> Iterator[ShotEvent]:
        """The shot's events in order until finished, cancelled or error (then it stops).

        ``timeout``: the most seconds to wait for the next event (TimeoutError after). Leaving
        the loop early is fine: a later ``events(key)`` goes on where this one stopped.
        """
        with self._lock:
            events = self._key_stream.get(key)
        if events is None:
            raise KeyError(f"not subscribed to shot {key}: submit it or call subscribe(key)")
        limit = self.timeout if timeout is None else timeout
        while True:
            try:
                msg = events.get(timeout=limit)
            except queue.Empty:
                raise TimeoutError(f"no event of shot {key} within {limit:g} s") from None
            if msg is None:
                raise ConnectionError(self._closed_reason(f"while waiting for shot {key}"))
            event = _event(msg)
            if event.kind in TERMINAL:
                with self._lock:
                    if self._key_stream.get(key) is events:
                        del self._key_stream[key]
            yield event
            if event.kind in TERMINAL:
                return

    def get_frame(
        self,
        key: str,
        t: int,
        timeout: float | None = None,
        dtype: str = "float32",
        wait: bool = True,
    ) -> np.ndarray:
        """Frame ``t`` of a shot (made in order up to ``t`` once, then served from the cache)."""
        body = {"key": key, "frame": t, "dtype": dtype, "wait": wait}
        reply = self.request("get_frame", body, timeout=timeout)
        return reply.array(reply.body["image"])

    def fetch(self, key: str, start: int = 0, stop: int | None = None) -> dict[int, np.ndarray]:
        """The finished frames in [start, stop) that exist now (no compute)."""
        reply = self.request("fetch", {"key": key, "start": start, "stop": stop})
        return {f["frame"]: reply.array(f["image"]) for f in reply.body["frames"]}

    def echo(self, arrays: Sequence[np.ndarray], timeout: float | None = None) -> list[np.ndarray]:
        """Send arrays and get them back (diagnostics and the transport benchmark)."""
        parts: list[Any] = []
        descs = [_add(parts, a) for a in arrays]
        reply = self.request("echo", {"arrays": descs}, parts, timeout)
        return [reply.array(d, f"arrays[{i}]") for i, d in enumerate(reply.body["arrays"])]


@dataclass
class _Posted:
    """A request sent and not yet answered (:meth:`Client._post`)."""

    type: str
    id: str
    answer: queue.SimpleQueue
    events: queue.SimpleQueue | None


def _add(parts: list[Any], array: np.ndarray) -> dict[str, Any]:
    desc, buf = array_part(array, len(parts))
    parts.append(buf)
    return desc


def _event(msg: Message) -> ShotEvent:
    b = msg.body
    image = _unpack(b["image"], msg.parts, "image") if isinstance(b.get("image"), dict) else None
    preview = (
        _unpack(b["preview"], msg.parts, "preview") if isinstance(b.get("preview"), dict) else None
    )
    return ShotEvent(
        kind=str(b.get("kind")),
        key=str(b.get("key")),
        frame=int(b.get("frame", -1) if b.get("frame") is not None else -1),
        n_frames=int(b.get("n_frames") or 0),
        step=int(b.get("step") if b.get("step") is not None else -1),
        n_steps=int(b.get("n_steps") or 0),
        eta_s=b.get("eta_s"),
        message=str(b.get("message") or ""),
        image=image,
        preview=preview,
        body=b,
    )

"""An asyncio DEALER to one endpoint, shared by every async request of one event loop.

``ask_async``, ``tell_async`` and the client's ``control_async`` ride it: many requests
in flight at once on one socket, answered by correlation id. Its monitor marks it dead when
the peer disconnects, failing what waits with ActorDied (or Unreachable, if nobody ever
listened there), so the next request finds the actor again.

ZeroMQ only: the in-memory twin of the transport (:mod:`.memory`) has no asyncio link, so
a client on another transport refuses the asyncio forms with NotImplementedError when
it would open one (the blocking forms, and the ``*_async`` twins of ``aio``, work on any).
"""

from __future__ import annotations

import asyncio
import weakref
from typing import TYPE_CHECKING

import zmq
from zmq.utils.monitor import parse_monitor_message

from .. import wire
from ..errors import ActorDied, AskTimeout, MailboxFull, from_wire
from ..wire import BODY, CORR_ID, KIND
from .channel import _close_dropped
from .sockets import async_channel_socket
from .transport import Unreachable, frames_within

if TYPE_CHECKING:  # pragma: no cover
    from .client import Client

_REPLY = int(wire.Kind.REPLY)


class AsyncLink:
    """An asyncio DEALER to one endpoint, shared by every ask of one event loop."""

    def __init__(self, endpoint: str, client: Client):
        transport = client.transport
        if transport.scheme != "tcp":
            raise NotImplementedError(f"the asyncio forms (ask_async, tell_async, control_async) run on the ZeroMQ "
                                      f"transport only, not on {transport!r}: use the blocking forms there")
        frame = max(client.limits.get(endpoint, client.max_frame_bytes), client.max_frame_bytes)
        # The monitor reports only events that happen once per connection (see
        # sockets.ASYNC_CHANNEL_EVENTS): a dead peer is found by DISCONNECTED, a stale address
        # by ActorRef._link, which never reuses an address whose link died.
        sock, self.monitor = async_channel_socket(endpoint, hwm=frames_within(client.send_bytes, frame, client.hwm),
                                                  max_bytes=client.max_frame_bytes, linger_ms=1000,
                                                  keys=getattr(transport, "keys", None))
        self.connected = False
        self.sock = sock
        self.endpoint = endpoint
        self.max_bytes = client.max_frame_bytes
        self.send_timeout = client.send_timeout
        self.waiting: dict[int, asyncio.Future[object]] = {}
        self.dead = False
        self._tasks = [asyncio.ensure_future(self._read()), asyncio.ensure_future(self._watch())]
        weakref.finalize(self, _close_dropped, sock, self.monitor)
        client._all_alinks.add(self)

    def close(self) -> None:
        self.dead = True
        try:
            current = asyncio.current_task()
        except RuntimeError:  # called outside any running loop (Client.close)
            current = None
        for task in self._tasks:
            if task is not current and not task.done():
                try:
                    task.cancel()
                except RuntimeError:  # its loop is closed: nothing runs it any more
                    pass
        _close_dropped(self.sock, self.monitor)

    async def send(self, frame: bytes) -> None:
        try:
            await asyncio.wait_for(self.sock.send(frame), self.send_timeout)
        except asyncio.TimeoutError:
            raise MailboxFull(f"mailbox at {self.endpoint} stayed full for the send timeout") from None

    async def request(self, frame: bytes, msg_id: int, timeout: float, what: str) -> object:
        if self.dead:
            raise Unreachable(f"{what} is gone")
        fut = asyncio.get_running_loop().create_future()
        self.waiting[msg_id] = fut
        try:
            await self.send(frame)
            return await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            raise AskTimeout(f"{what} did not answer within {timeout:g} s") from None
        except Unreachable:
            raise Unreachable(f"{what} is not reachable at {self.endpoint}") from None
        except ActorDied:
            raise ActorDied(f"{what} died while the request was in flight") from None
        finally:
            self.waiting.pop(msg_id, None)

    async def _read(self) -> None:
        while True:
            frame = await self.sock.recv()
            try:
                envelopes = wire.decode(frame, self.max_bytes)
            except Exception:
                continue
            for env in envelopes:
                fut = self.waiting.get(env[CORR_ID])
                if fut is not None and not fut.done():
                    if env[KIND] == _REPLY:
                        fut.set_result(env[BODY])
                    else:
                        fut.set_exception(from_wire(env[BODY]))

    async def _watch(self) -> None:
        while True:
            event = parse_monitor_message(await self.monitor.recv_multipart())["event"]
            if event == zmq.EVENT_CONNECTED:
                self.connected = True
            elif event == zmq.EVENT_DISCONNECTED:
                self.dead = True
                never = not self.connected
                # Let a reply that raced the disconnect be read first.
                await asyncio.sleep(0)
                for fut in list(self.waiting.values()):
                    if not fut.done():
                        fut.set_exception(Unreachable("nobody listens there") if never else ActorDied("peer disconnected"))
                self.close()
                return

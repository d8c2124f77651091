"""A TCP relay that a test can cut and heal, for running link-cut tests over real ZeroMQ.

``Relay(port)`` listens on a loopback port of its own and forwards every connection to
``port``. ``cut(forward=True, back=True)`` stops moving bytes in one or both directions
(they wait in the kernel's buffers, as in a partition that TCP outlives); ``heal()``
moves them again, in order. A side that closes closes the other side too, so a peer's
death is still seen through the relay.
"""

from __future__ import annotations

import select
import socket
import threading


class Relay:
    def __init__(self, target_port: int, host: str = "127.0.0.1"):
        self.target = (host, target_port)
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind((host, 0))
        self.server.listen(16)
        self.port = self.server.getsockname()[1]
        self.address = f"tcp://{host}:{self.port}"
        self.forward_cut = False  # client -> target
        self.back_cut = False  # target -> client
        self._pairs: dict[socket.socket, tuple[socket.socket, bool]] = {}  # sock -> (other, is it the client side)
        self._pumping = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-relay", daemon=True)
        self._thread.start()

    def cut(self, forward: bool = True, back: bool = True) -> None:
        with self._pumping:  # once cut() returns, no byte crosses a cut direction
            self.forward_cut, self.back_cut = forward, back

    def heal(self) -> None:
        with self._pumping:
            self.forward_cut = self.back_cut = False

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for sock in list(self._pairs):
            sock.close()
        self.server.close()

    def _moving(self, sock: socket.socket) -> bool:
        client_side = self._pairs[sock][1]
        return not (self.forward_cut if client_side else self.back_cut)

    def _run(self) -> None:
        while not self._stop.is_set():
            readable = [self.server] + [s for s in self._pairs if self._moving(s)]
            ready, _, _ = select.select(readable, [], [], 0.01)
            for sock in ready:
                if sock is self.server:
                    self._accept()
                    continue
                with self._pumping:
                    if sock in self._pairs and self._moving(sock):  # it may have been cut since select()
                        self._pump(sock)

    def _accept(self) -> None:
        client, _ = self.server.accept()
        target = socket.socket()
        try:
            target.connect(self.target)
        except OSError:
            client.close()
            target.close()
            return
        self._pairs[client] = (target, True)
        self._pairs[target] = (client, False)

    def _pump(self, sock: socket.socket) -> None:
        other = self._pairs[sock][0]
        try:
            data = sock.recv(65536)
        except OSError:
            data = b""
        if data:
            try:
                other.sendall(data)
                return
            except OSError:
                pass
        for s in (sock, other):
            self._pairs.pop(s, None)
            s.close()


class Relays:
    """Relays cut, healed and closed together: a partition across every link a test routes through them."""

    def __init__(self) -> None:
        self._relays: list[Relay] = []

    def add(self, target_port: int) -> Relay:
        relay = Relay(target_port)
        self._relays.append(relay)
        return relay

    def cut(self, forward: bool = True, back: bool = True) -> None:
        for relay in self._relays:
            relay.cut(forward, back)

    def heal(self) -> None:
        for relay in self._relays:
            relay.heal()

    def close(self) -> None:
        for relay in self._relays:
            relay.close()

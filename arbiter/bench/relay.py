"""The raw ceiling: a plain Python UDP relay with the SFU's fan-out and no ICE, DTLS or SRTP.

It uses the same loop shape as the SFU's endpoint (raw non-blocking socket drained in
batches, plain `sendto`), so the gap between its figure and Arbiter's is what security and
signaling cost, and its figure is what this machine can do in Python at all.

Protocol (loopback only, benchmark use): a datagram `b"SUB" + publisher number (4 bytes)` from
an address subscribes that address to the publisher; `b"PUB" + number` registers the sender as
that publisher. Every other datagram from a registered publisher is sent to each of its
subscribers. Run as `python -m arbiter.bench.relay PORT`; it prints its port and serves until
killed.
"""

from __future__ import annotations

import select
import socket
import struct
import sys

BATCH = 256
_NUMBER = struct.Struct("!I")


def serve(sock: socket.socket) -> None:
    sock.setblocking(False)
    publishers: dict[tuple[str, int], list[tuple[str, int]]] = {}
    by_number: dict[int, list[tuple[str, int]]] = {}
    recvfrom, sendto = sock.recvfrom, sock.sendto
    poller = select.epoll()
    poller.register(sock.fileno(), select.EPOLLIN)
    while True:
        poller.poll()
        for _ in range(BATCH):
            try:
                data, addr = recvfrom(2048)
            except BlockingIOError:
                break
            except OSError:
                continue  # an ICMP error reported on the socket: nothing to read
            # Control first (media is never 7 bytes): a new leg may be given the port of a
            # publisher leg of an earlier run, whose registration must not swallow its SUB.
            if len(data) == 7 and data[:3] in (b"SUB", b"PUB"):
                publishers.pop(addr, None)
                (number,) = _NUMBER.unpack_from(data, 3)
                subscribers = by_number.setdefault(number, [])
                if data[:3] == b"SUB":
                    if addr not in subscribers:  # a retransmitted SUB must not double up
                        subscribers.append(addr)
                else:
                    publishers[addr] = subscribers
                try:
                    sendto(b"OK", addr)
                except OSError:
                    pass
                continue
            targets = publishers.get(addr)
            if targets is not None:
                for target in targets:
                    try:
                        sendto(data, target)
                    except OSError:
                        pass  # full buffer, or an ICMP error from a subscriber that left


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        sock.setsockopt(socket.SOL_SOCKET, option, 4 * 1024 * 1024)
    sock.bind(("127.0.0.1", port))
    print(sock.getsockname()[1], flush=True)
    try:
        serve(sock)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

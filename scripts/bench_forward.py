"""Micro-benchmark of the SFU forwarding loop: forwarded packets per CPU-second at fan-out N.

One real `MediaEndpoint` (the production receive loop, dispatch, Router and SRTP) runs in this
process on a loopback UDP port. A publisher and N subscribers do real ICE (STUN with
MESSAGE-INTEGRITY) and real DTLS handshakes against it with `PeerClient`, over their own UDP
sockets. Then two child processes take those sockets over (their file descriptors are passed
down): a sender that protects and sends `--rate` 1200-byte RTP packets per second for
`--seconds`, and a sink that counts what arrives at the N subscriber sockets and decrypts the
first packets of each to prove they are intact. This process's CPU time during the blast is
the denominator.

`--listen 0.0.0.0` binds the endpoint to the wildcard, where it reads each datagram's arrival
address (IP_PKTINFO, `recvmsg`): what that costs the loop. The peers reach it on `--connect`
(127.0.0.1): an address the kernel would answer them from anyway, so it sends with `sendto`.
`--connect` another local address (a second address of the host) makes it send every datagram
from that address (`sendmsg` with IP_PKTINFO): the forced-source path's cost.

Usage: .venv/bin/python scripts/bench_forward.py [--fanout 4] [--rate 20000] [--seconds 5]
       [--size 1200] [--listen 127.0.0.1] [--connect 127.0.0.1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time

import trio

from arbiter.config import MediaConfig
from arbiter.sfu import rtp
from arbiter.sfu.client import PeerClient
from arbiter.sfu.dtls import SRTP_PROFILES, Certificate, SrtpKeys
from arbiter.sfu.endpoint import MediaEndpoint
from arbiter.sfu.media_worker import MediaWorker
from arbiter.sfu.srtp import SrtpSession
from arbiter.sfu.transport import CONSUMER, PRODUCER, WebRtcTransport

HERE = os.path.abspath(__file__)
SSRC = 0x5EED
VERIFY = 50  # packets per subscriber the sink decrypts and checks


def _keys_arg(keys: SrtpKeys) -> str:
    return f"{keys.profile.name}:{keys.tx_key.hex()}:{keys.rx_key.hex()}"


def _keys_from(arg: str) -> SrtpKeys:
    name, tx, rx = arg.split(":")
    profile = next(p for p in SRTP_PROFILES if p.name == name)
    return SrtpKeys(profile, bytes.fromhex(tx), bytes.fromhex(rx))


# -- child roles -----------------------------------------------------------------------------


def run_sender(fd: int, target: str, keys: str, rate: int, seconds: float, size: int) -> None:
    sock = socket.socket(fileno=fd)
    sock.setblocking(True)  # the parent's non-blocking flag came with the descriptor
    host, port = target.rsplit(":", 1)
    addr = (host, int(port))
    srtp = SrtpSession(_keys_from(keys))
    payload = bytes(range(256)) * (size // 256 + 1)
    header = 12
    total = int(rate * seconds)
    start = time.perf_counter()
    sent = 0
    batch = max(1, rate // 1000)  # pace in 1 ms slices
    while sent < total:
        for _ in range(min(batch, total - sent)):
            packet = rtp.build_rtp(96, sent & 0xFFFF, sent * 3000, SSRC, payload[: size - header])
            sock.sendto(srtp.protect_rtp(packet), addr)
            sent += 1
        ahead = start + sent / rate - time.perf_counter()
        if ahead > 0:
            time.sleep(ahead)
    print(json.dumps({"sent": sent, "seconds": time.perf_counter() - start}), flush=True)


def run_sink(fds: list[int], keys: list[str], seconds: float, size: int) -> None:
    import select

    socks = [socket.socket(fileno=fd) for fd in fds]
    sessions = [SrtpSession(_keys_from(k)) for k in keys]
    counts = [0] * len(socks)
    bad = 0
    index = {s.fileno(): i for i, s in enumerate(socks)}
    for s in socks:
        s.setblocking(False)
    poller = select.epoll()
    for s in socks:
        poller.register(s.fileno(), select.EPOLLIN)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for fd, _ in poller.poll(0.2):
            i = index[fd]
            s = socks[i]
            while True:
                try:
                    data = s.recv(2048)
                except BlockingIOError:
                    break
                if counts[i] < VERIFY and 128 <= data[0] < 192 and not 192 <= data[1] <= 223:
                    try:
                        plain = sessions[i].unprotect_rtp_untrusted(data)
                        if len(plain) != size or rtp.ssrc_of(plain) != SSRC:
                            bad += 1
                    except Exception:
                        bad += 1
                if 128 <= data[0] < 192 and not 192 <= data[1] <= 223:
                    counts[i] += 1
    print(json.dumps({"received": counts, "bad": bad}), flush=True)


# -- the SFU side ----------------------------------------------------------------------------


async def _handshake(
    endpoint: MediaEndpoint,
    transport: WebRtcTransport,
    sock: socket.socket,
    client: PeerClient,
    connect: str,
) -> None:
    target = (connect, endpoint.port)
    transport.set_remote(
        client.ufrag, client.pwd, [("sha-256", client.fingerprint)], trio.current_time()
    )
    sock.sendto(client.binding_request(), target)
    out = client.start_dtls(trio.current_time())
    with trio.fail_after(10):
        while not (client.connected and transport.connected):
            for datagram in out:
                sock.sendto(datagram, target)
            out = []
            try:
                data = sock.recv(2048)
            except BlockingIOError:
                with trio.move_on_after(0.05):
                    await trio.lowlevel.wait_readable(sock)
                out = client.handle_timeout(trio.current_time())
                continue
            if 128 <= data[0] < 192:
                continue  # an early RTCP (PLI) for a subscriber: not part of the handshake
            out = client.receive_untrusted(data, trio.current_time())


async def bench(args: argparse.Namespace) -> dict[str, object]:
    cert = Certificate.generate()
    client_cert = Certificate.generate()
    endpoint = MediaEndpoint(MediaConfig(listen=args.listen, port=0), cert)
    async with trio.open_nursery() as nursery:
        worker = MediaWorker(endpoint)
        await nursery.start(worker.run)
        router = worker.create_router()

        def new(role: str, owner: str) -> WebRtcTransport:
            t = router.create_transport(role=role, owner=owner, certificate=cert,
                                        now=trio.current_time())  # fmt: skip
            endpoint.register(t)
            return t

        def sock() -> socket.socket:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
            s.bind(("127.0.0.1", 0))
            s.setblocking(False)
            return s

        def client_for(t: WebRtcTransport) -> PeerClient:
            return PeerClient(client_cert, remote_ufrag=t.ice.ufrag, remote_pwd=t.ice.pwd,
                              remote_fingerprint=cert.fingerprint())  # fmt: skip

        pub_t = new(PRODUCER, "publisher")
        producer = router.create_producer(pub_t, "video", SSRC, None)
        pub_sock, pub_client = sock(), client_for(pub_t)
        await _handshake(endpoint, pub_t, pub_sock, pub_client, args.connect)
        sub_socks, sub_clients = [], []
        for i in range(args.fanout):
            t = new(CONSUMER, f"subscriber-{i}")
            router.create_consumer(producer, t)
            s, c = sock(), client_for(t)
            await _handshake(endpoint, t, s, c, args.connect)
            sub_socks.append(s)
            sub_clients.append(c)
        producer.rebuild_targets()
        assert len(producer.targets) == args.fanout

        pub_keys = _keys_arg(pub_client.dtls.srtp_keys)  # type: ignore[arg-type]
        sub_keys = [_keys_arg(c.dtls.srtp_keys) for c in sub_clients]  # type: ignore[arg-type]
        # Spawning blocks for a fork+exec, before the measured window: harmless here.
        sink = subprocess.Popen(  # noqa: ASYNC220
            [sys.executable, HERE, "--role", "sink", "--fds",
             ",".join(str(s.fileno()) for s in sub_socks), "--keys", ",".join(sub_keys),
             "--seconds", str(args.seconds + 2), "--size", str(args.size)],
            pass_fds=[s.fileno() for s in sub_socks], stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        await trio.sleep(0.3)
        cpu0, wall0, in0 = time.process_time(), time.perf_counter(), endpoint.counters["rtp_in"]
        sender = subprocess.Popen(  # noqa: ASYNC220
            [sys.executable, HERE, "--role", "sender", "--fds", str(pub_sock.fileno()),
             "--target", f"{args.connect}:{endpoint.port}", "--keys", pub_keys,
             "--rate", str(args.rate), "--seconds", str(args.seconds), "--size", str(args.size)],
            pass_fds=[pub_sock.fileno()], stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        sender_out = await trio.to_thread.run_sync(sender.communicate)
        # Let the last packets drain through the loop before reading the CPU clock.
        last = -1
        while endpoint.counters["rtp_in"] != last:
            last = endpoint.counters["rtp_in"]
            await trio.sleep(0.2)
        cpu = time.process_time() - cpu0
        wall = time.perf_counter() - wall0
        forwarded_in = endpoint.counters["rtp_in"] - in0
        sink_out = await trio.to_thread.run_sync(sink.communicate)
        nursery.cancel_scope.cancel()
    sent = json.loads(sender_out[0])
    received = json.loads(sink_out[0])
    out_packets = sum(received["received"])
    expected = sent["sent"] * args.fanout
    return {
        "listen": args.listen,
        "connect": args.connect,
        "fanout": args.fanout,
        "packet_bytes": args.size,
        "srtp_profile": pub_client.dtls.srtp_keys.profile.name,  # type: ignore[union-attr]
        "offered_pps": args.rate,
        "sent": sent["sent"],
        "sfu_received": forwarded_in,
        "forwarded_received_by_sinks": out_packets,
        "loss": round(1 - out_packets / expected, 5) if expected else None,
        "corrupt": received["bad"],
        "sfu_cpu_s": round(cpu, 3),
        "wall_s": round(wall, 3),
        "sfu_cpu_utilisation": round(cpu / wall, 3),
        "forwarded_pps_per_cpu_s": round(out_packets / cpu) if cpu else None,
        "drops": {k: v for k, v in endpoint.counters.items() if k not in ("rtp_in", "rtcp_in")},
        # Destinations the endpoint sends to from a forced source address (sendmsg).
        "forced_sources": len(getattr(endpoint, "_via", {})),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fanout", type=int, default=4)
    parser.add_argument("--rate", type=int, default=20000, help="publisher packets per second")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--size", type=int, default=1200, help="RTP packet bytes (plaintext)")
    parser.add_argument("--listen", default="127.0.0.1", help="the endpoint's bind address")
    parser.add_argument("--connect", default="127.0.0.1", help="the address peers send to")
    parser.add_argument("--json", help="also write the result here")
    parser.add_argument("--role", choices=["bench", "sender", "sink"], default="bench")
    parser.add_argument("--fds", default="")
    parser.add_argument("--keys", default="")
    parser.add_argument("--target", default="")
    args = parser.parse_args()
    if args.role == "sender":
        run_sender(int(args.fds), args.target, args.keys, args.rate, args.seconds, args.size)
    elif args.role == "sink":
        run_sink([int(f) for f in args.fds.split(",")], args.keys.split(","), args.seconds,
                 args.size)  # fmt: skip
    else:
        result = trio.run(bench, args)
        print(json.dumps(result, indent=2))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()

"""The room SFU: sans-IO media protocols (STUN, DTLS, SRTP, RTP/RTCP, SDP), the Router that fans
packets out, and the one I/O module (endpoint.py) that owns the UDP socket."""

"""WebSocket client for the tests: handshake with `Host: argv[3]` through whatever captures
argv[1]:argv[2], send one masked text frame, print the echoed payload."""
import os
import socket
import sys

c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
c.sendall(
    b"GET /chat HTTP/1.1\r\nHost: " + sys.argv[3].encode() + b"\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)
buf = b""
while b"\r\n\r\n" not in buf:
    d = c.recv(4096)
    if not d:
        sys.exit("closed during the handshake: %r" % buf)
    buf += d
head, _, buf = buf.partition(b"\r\n\r\n")
print(head.split(b"\r\n")[0].decode())
if b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" not in head:
    sys.exit("bad Sec-WebSocket-Accept: %r" % head)
msg = b"hello through the proxy"
mask = os.urandom(4)
c.sendall(bytes([0x81, 0x80 | len(msg)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(msg)))
while len(buf) < 2 + len(msg):
    d = c.recv(4096)
    if not d:
        sys.exit("closed before the echo")
    buf += d
print(buf[2 : 2 + len(msg)].decode())

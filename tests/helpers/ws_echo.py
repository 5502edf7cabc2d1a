"""A minimal WebSocket echo origin for the tests: answers the opening handshake (RFC 6455
section 4.2.2) and echoes each text frame back unmasked until a close frame."""
import base64
import hashlib
import socket
import sys
import threading

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def recv_exact(c, n, buf):
    while len(buf) < n:
        d = c.recv(65536)
        if not d:
            raise EOFError
        buf += d
    return buf[:n], buf[n:]


def serve(c):
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = c.recv(4096)
        if not d:
            return
        buf += d
    head, _, buf = buf.partition(b"\r\n\r\n")
    key = next(
        l.split(b":", 1)[1].strip()
        for l in head.split(b"\r\n")
        if l.lower().startswith(b"sec-websocket-key:")
    )
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
    c.sendall(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )
    try:
        while True:
            hdr, buf = recv_exact(c, 2, buf)
            opcode, length = hdr[0] & 0x0F, hdr[1] & 0x7F
            mask, buf = recv_exact(c, 4, buf)
            payload, buf = recv_exact(c, length, buf)
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            c.sendall(bytes([0x80 | opcode, len(data)]) + data)
            if opcode == 8:
                break
    except EOFError:
        pass
    c.close()


s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(16)
while True:
    conn, _ = s.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()

"""Misbehaving HTTP origins for the fault tests, one per port on argv[1]:

- argv[2]: answers the head and 100 of 1,000 promised body bytes, then resets (RST);
- argv[3]: accepts and never reads nor answers (a stalled consumer: uploads back up);
- argv[4]: answers with bytes that are not HTTP, then closes.
"""
import socket
import struct
import sys
import threading
import time


def listen(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[1], port))
    s.listen(64)
    return s


def read_head(c):
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = c.recv(4096)
        if not d:
            return None
        buf += d
    return buf


def reset_mid_body(c):
    if read_head(c) is None:
        return
    c.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n" + b"x" * 100)
    time.sleep(0.2)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()


def never_read(c):
    time.sleep(3600)


def garbage(c):
    if read_head(c) is None:
        return
    c.sendall(b"\x00\x01 this is not HTTP\r\n\r\n")
    c.close()


def serve(port, handler):
    s = listen(port)
    while True:
        c, _ = s.accept()
        threading.Thread(target=handler, args=(c,), daemon=True).start()


for port, handler in zip(sys.argv[2:5], (reset_mid_body, never_read, garbage)):
    threading.Thread(target=serve, args=(int(port), handler), daemon=True).start()
while True:
    time.sleep(3600)

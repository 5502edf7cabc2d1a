"""Send raw bytes to argv[1]:argv[2] and print what comes back, then CLOSED or OPEN.

argv[3] is the request with Python escapes (\r\n); argv[4], if given, sends it one byte per
that many seconds. The reply is read until the peer closes or stays quiet for 3 seconds."""
import socket
import sys
import time

req = sys.argv[3].encode().decode("unicode_escape").encode("latin-1")
pace = float(sys.argv[4]) if len(sys.argv) > 4 else 0
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
try:
    if pace:
        for b in req:
            c.sendall(bytes([b]))
            time.sleep(pace)
    else:
        c.sendall(req)
except OSError as e:
    print("SEND FAILED %s" % e)
c.settimeout(3)
out, state = b"", "OPEN"
try:
    while True:
        d = c.recv(65536)
        if not d:
            state = "CLOSED"
            break
        out += d
except socket.timeout:
    pass
except ConnectionResetError:
    state = "CLOSED"
sys.stdout.write(out.decode("latin-1"))
print("\n" + state)

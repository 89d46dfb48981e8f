"""A server bound after the fork, on one node, and a client forked before it, on another: the client reaches
the server's AF_UNIX path through rforkd and sends MIB mebibytes, which the server reads slowly; the server
answers with the digest of what it got. Then a second connection, which the client half-closes after
its request (shutdown(SHUT_WR)): the answer must still come back, then end of file; before answering, the
server tries to send a descriptor, which cannot cross nodes and must be refused (EOPNOTSUPP). Prints the sizes and whether the digests agree, and on stderr how
long the client took to send (flow control holds it back: about as long as the server takes to read) and
the server to read."""
import errno
import hashlib
import os
import socket
import sys
import time

mib = int(sys.argv[1]) if len(sys.argv) > 1 else 32
pause = float(sys.argv[2]) if len(sys.argv) > 2 else 0.005  # seconds per 256 KiB read: a slow reader
path = "/tmp/rfork-relay-%d.sock" % os.getpid()


def read_to_end(sock):
    """Everything the other end sends until it shuts down its side."""
    got = b""
    while True:
        data = sock.recv(64)
        if not data:
            return got
        got += data


pid = os.fork()
if pid == 0:
    print("client runs on", socket.gethostname(), file=sys.stderr, flush=True)
    deadline = time.time() + 20
    while True:
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            c.connect(path)
            break
        except OSError:
            c.close()
            if time.time() > deadline:
                os._exit(3)
            time.sleep(0.2)
    block = bytes(range(256)) * 4096  # 1 MiB
    t0 = time.monotonic()
    digest = hashlib.sha256()
    for i in range(mib):
        chunk = bytes([i % 251]) + block[1:]
        digest.update(chunk)
        c.sendall(chunk)
    print("client sent in %.2f s" % (time.monotonic() - t0), file=sys.stderr, flush=True)
    answer = c.recv(64).decode()
    if answer != digest.hexdigest():
        os._exit(4)
    # A second connection, half-closed: the request ends at end of file, the answer still comes back.
    c2 = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c2.connect(path)
    c2.sendall(b"ping")
    c2.shutdown(socket.SHUT_WR)
    reply = read_to_end(c2)
    os._exit(0 if reply == b"pong" else 5)
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind(path)
server.listen(1)
conn, _ = server.accept()
got, digest = 0, hashlib.sha256()
t0 = time.monotonic()
while got < mib << 20:
    data = conn.recv(min(256 << 10, (mib << 20) - got))
    if not data:
        break
    got += len(data)
    digest.update(data)
    time.sleep(pause)
print("server read in %.2f s" % (time.monotonic() - t0), file=sys.stderr, flush=True)
conn.sendall(digest.hexdigest().encode())
conn2, _ = server.accept()
request = read_to_end(conn2)
try:
    socket.send_fds(conn2, [b"x"], [0])
    fds = "sent"
except OSError as e:
    fds = "refused (%s)" % ("EOPNOTSUPP" if e.errno == errno.EOPNOTSUPP else e.strerror)
conn2.sendall(b"pong" if request == b"ping" else b"what?")
conn2.close()
_, status = os.waitpid(pid, 0)
os.unlink(path)
print("server's descriptor:", fds)
print("server got %d MiB, client %s" % (got >> 20, "agrees" if os.waitstatus_to_exitcode(status) == 0 else "exit %d" % os.waitstatus_to_exitcode(status)))

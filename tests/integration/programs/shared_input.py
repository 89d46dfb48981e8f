"""Pipes a parent keeps reading while a child it forked holds the same read end.

stdin-fork: forks a child that never reads its stdin, then reads stdin itself.
stdin-pool: starts a multiprocessing Pool (whose workers close their stdin), then reads stdin.
MODE (poll, select, epoll, nonblock-select, nonblock-epoll): the child waits for a pipe its parent
keeps a read end of, in that call, and reads it to the end; both print what they sent and got.
Each prints lengths and digests only, the same with or without rfork; where the children ran goes to
stderr ("child runs on NODE").
"""
import hashlib
import multiprocessing
import os
import select
import sys
import time


def square(x):
    return x * x


def say_where():
    print("child runs on", os.uname().nodename, file=sys.stderr, flush=True)


def wait_and_read(mode, r, total):
    if mode.startswith("nonblock"):
        os.set_blocking(r, False)
    ep = select.epoll() if mode.endswith("epoll") else None
    if ep:
        ep.register(r, select.EPOLLIN)
    got = bytearray()
    chunk = b"x"
    while len(got) < total and chunk:
        if mode.endswith("select"):
            select.select([r], [], [])
        elif ep:
            ep.poll()
        else:
            p = select.poll()
            p.register(r, select.POLLIN)
            p.poll()
        while True:
            try:
                chunk = os.read(r, 65536)
            except BlockingIOError:
                break
            got += chunk
            if not chunk or not mode.startswith("nonblock"):
                break
    return got


def main():
    mode = sys.argv[1]
    if mode == "stdin-fork":
        pid = os.fork()
        if pid == 0:
            say_where()
            time.sleep(1.0)
            os._exit(0)
        time.sleep(0.5)
        print("parent read", len(sys.stdin.read().split()), "lines", flush=True)
        os.waitpid(pid, 0)
    elif mode == "stdin-pool":
        with multiprocessing.Pool(2) as pool:
            print("pool", sum(pool.map(square, range(10))), flush=True)
            pool.apply(say_where)
        print("parent read", len(sys.stdin.read().split()), "lines", flush=True)
    else:
        total = 300_000
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(w)
            say_where()
            got = wait_and_read(mode, r, total)
            print(mode, "child got", len(got), hashlib.sha256(got).hexdigest()[:16], flush=True)
            os._exit(0)
        # The parent keeps its read end open: the child's stand-in must not read ahead.
        data = bytes((i * 7) % 251 for i in range(total))
        for i in range(0, total, 3000):
            os.write(w, data[i:i + 3000])
            time.sleep(0.0005)
        _, status = os.waitpid(pid, 0)
        print(mode, "parent sent", len(data), hashlib.sha256(data).hexdigest()[:16], "child status", status)


if __name__ == "__main__":
    main()

# A part that stops reading: the parent sends its child (on another node) 2 MB at once; the child reads
# one byte, then nothing for 8 s, so the bytes wait on their way (its pipe is full). Then it counts them.
import os
import time

print("pid", os.getpid(), flush=True)
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(w)
    n = len(os.read(r, 1))
    time.sleep(8)
    while True:
        b = os.read(r, 65536)
        if not b:
            break
        n += len(b)
    print(n, flush=True)
    os._exit(0)
os.close(r)
os.write(w, b"x" * 2000000)
os.close(w)
os.waitpid(pid, 0)

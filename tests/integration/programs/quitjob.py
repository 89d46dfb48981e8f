# A part that ends during a cut: the parent sends its child (on another node) 2 MB at once; the child
# reads one byte of it (so the rest is read ahead towards it and fills its pipe) and ends with status 5
# a second later, so a cut asked for before then cannot put its input in its pipe, and the child ends
# while it waits. The parent reports the broken pipe and the
# child's status: the same whether the job was saved meanwhile and restarted or not.
import os
import time

print("pid", os.getpid(), flush=True)
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(w)
    os.read(r, 1)
    time.sleep(1.0)
    os._exit(5)
os.close(r)
try:
    os.write(w, b"x" * 2000000)
    print("written", flush=True)
except BrokenPipeError:
    print("the child stopped reading", flush=True)
os.close(w)
_, status = os.waitpid(pid, 0)
print("child exited", os.waitstatus_to_exitcode(status), flush=True)

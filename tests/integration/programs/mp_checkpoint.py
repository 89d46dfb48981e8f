"""A Python multiprocessing job to save midway (fork start method): a Pool of three workers, a shared
Value added to under a Lock. Prints "pid N" first and "sum N" at its end, the same every run, and on
stderr the host it ends on."""
import multiprocessing as mp, os, socket, sys, time
def work(x):
    time.sleep(0.05)
    return x * x
if __name__ == "__main__":
    mp.set_start_method("fork")
    total = mp.Value("l", 0)
    lock = mp.Lock()
    print("pid", os.getpid(), flush=True)
    with mp.Pool(3) as pool:
        for r in pool.imap(work, range(200)):
            with lock:
                total.value += r
    print("sum", total.value, flush=True)
    print("job ends on", socket.gethostname(), file=sys.stderr, flush=True)

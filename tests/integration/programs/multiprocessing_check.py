"""Python multiprocessing (fork start method) under rfork: every result must equal the plain run's."""
import concurrent.futures
import multiprocessing as mp
import os
import socket


HOME = socket.gethostname()


def square(x):
    return x * x


def hostname_of(_):
    return socket.gethostname()


def note(kind, hosts):
    """Records, in $MP_WHERE, whether some of a kind's processes ran on another node."""
    with open(os.environ.get("MP_WHERE", os.devnull), "a") as where:
        print(kind, "elsewhere" if any(h != HOME for h in hosts) else "here", file=where)


def add_under_lock(value, array, n, hosts):
    hosts.put(socket.gethostname())
    for _ in range(n):
        with value.get_lock():
            value.value += 1
        with array.get_lock():
            array[0] += 1


def produce(queue, base):
    queue.put(socket.gethostname())
    for i in range(50):
        queue.put(base + i)
    queue.put(None)


def fill(shared_dict, shared_list, k):
    shared_dict["host%d" % k] = socket.gethostname()
    shared_dict[k] = k * 10
    shared_list.append(k)


def report_host(conn):
    conn.send(socket.gethostname())
    conn.close()


def main():
    mp.set_start_method("fork")
    # First, while nothing shared exists: a Process that holds nothing shared (a one-way pipe) may move.
    reader, writer = mp.Pipe(duplex=False)
    p = mp.Process(target=report_host, args=(writer,))
    p.start()
    writer.close()
    host = reader.recv()
    p.join()
    note("plain Process", [host])
    print("plain Process exit", p.exitcode)
    with mp.Pool(4) as pool:
        print("Pool.map", sum(pool.map(square, range(200))))
        print("Pool.imap_unordered", sorted(pool.imap_unordered(square, range(50)))[-3:])
        note("Pool", pool.map(hostname_of, range(40), chunksize=1))
    value = mp.Value("i", 0)
    array = mp.Array("i", 1)
    hosts = mp.SimpleQueue()
    workers = [mp.Process(target=add_under_lock, args=(value, array, 500, hosts)) for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    note("Value/Array", [hosts.get() for _ in workers])
    print("Value/Array under their locks", value.value, array[0], [w.exitcode for w in workers])
    queue = mp.Queue()
    producers = [mp.Process(target=produce, args=(queue, 1000 * k)) for k in range(2)]
    for p in producers:
        p.start()
    got, done, where = [], 0, []
    while done < 2:
        item = queue.get(timeout=60)
        if item is None:
            done += 1
        elif isinstance(item, str):
            where.append(item)
        else:
            got.append(item)
    note("Queue", where)
    for p in producers:
        p.join()
    print("Queue", len(got), sum(got))
    with concurrent.futures.ProcessPoolExecutor(max_workers=3) as ex:
        print("ProcessPoolExecutor", sum(ex.map(square, range(100))))
        note("ProcessPoolExecutor", list(ex.map(hostname_of, range(20))))
    # Last: the parent's connections to the Manager are sockets, which keep later children home.
    with mp.Manager() as manager:
        d, lst = manager.dict(), manager.list()
        ps = [mp.Process(target=fill, args=(d, lst, k)) for k in range(4)]
        for p in ps:
            p.start()
        for p in ps:
            p.join()
        note("Manager", [d.pop("host%d" % k) for k in range(4)])
        print("Manager", sorted(d.items()), sorted(lst))


if __name__ == "__main__":
    main()

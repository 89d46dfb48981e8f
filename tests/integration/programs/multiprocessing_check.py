"""Python multiprocessing (fork start method) under rfork: every result must equal the plain run's."""
import concurrent.futures
import multiprocessing as mp
import os
import socket


def square(x):
    return x * x


def add_under_lock(value, array, n):
    for _ in range(n):
        with value.get_lock():
            value.value += 1
        with array.get_lock():
            array[0] += 1


def produce(queue, base):
    for i in range(50):
        queue.put(base + i)
    queue.put(None)


def fill(shared_dict, shared_list, k):
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
    with open(os.environ.get("MP_WHERE", os.devnull), "w") as where:
        print("plain Process", "elsewhere" if host != socket.gethostname() else "here", file=where)
    print("plain Process exit", p.exitcode)
    with mp.Pool(4) as pool:
        print("Pool.map", sum(pool.map(square, range(200))))
        print("Pool.imap_unordered", sorted(pool.imap_unordered(square, range(50)))[-3:])
    value = mp.Value("i", 0)
    array = mp.Array("i", 1)
    workers = [mp.Process(target=add_under_lock, args=(value, array, 500)) for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    print("Value/Array under their locks", value.value, array[0], [w.exitcode for w in workers])
    queue = mp.Queue()
    producers = [mp.Process(target=produce, args=(queue, 1000 * k)) for k in range(2)]
    for p in producers:
        p.start()
    got, done = [], 0
    while done < 2:
        item = queue.get(timeout=60)
        if item is None:
            done += 1
        else:
            got.append(item)
    for p in producers:
        p.join()
    print("Queue", len(got), sum(got))
    with mp.Manager() as manager:
        d, lst = manager.dict(), manager.list()
        ps = [mp.Process(target=fill, args=(d, lst, k)) for k in range(4)]
        for p in ps:
            p.start()
        for p in ps:
            p.join()
        print("Manager", sorted(d.items()), sorted(lst))
    with concurrent.futures.ProcessPoolExecutor(max_workers=3) as ex:
        print("ProcessPoolExecutor", sum(ex.map(square, range(100))))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""How fast can one new file be filled on this file system, by one writer or two?

The rekey writes each new Data.db with pwrite from all threads at precomputed offsets. On
Linux, buffered writes to one file serialize on the file's inode lock, so the page-cache
work of writing (page allocation and the copy) does not scale with threads; a shared
writable mapping avoids the lock but pays page faults and zeroing. This script measures the
three on DIR so that the write-side floor of `sstable-rekey bench` can be checked:

    python3 tools/write_scaling.py [DIR] [SIZE_MIB]      # default /dev/shm, 908

It prints seconds to fill SIZE_MIB of a new file in 2 MiB windows, for pwrite and for a
mapping (MADV_POPULATE_WRITE then a copy), each with one and two processes writing
alternate windows. Standard library only.
"""

import mmap
import os
import sys
import time

MADV_POPULATE_WRITE = 23  # Linux 5.14+
WINDOW = 2 << 20


def fill(path, size, mode, writers):
    buf = os.urandom(WINDOW)
    fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, size)
        start = time.perf_counter()
        children = []
        for w in range(writers):
            pid = os.fork()
            if pid == 0:
                try:
                    offsets = range(w * WINDOW, size, WINDOW * writers)
                    if mode == "pwrite":
                        for off in offsets:
                            os.pwrite(fd, buf, off)
                    else:
                        m = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
                        for off in offsets:
                            n = min(WINDOW, size - off)
                            m.madvise(MADV_POPULATE_WRITE, off, n)
                            m[off:off + n] = buf[:n]
                            m.madvise(mmap.MADV_DONTNEED, off, n)
                        m.close()
                finally:
                    os._exit(0)
            children.append(pid)
        for pid in children:
            _, status = os.waitpid(pid, 0)
            if status != 0:
                raise SystemExit(f"writer failed with status {status}")
        return time.perf_counter() - start
    finally:
        os.close(fd)
        os.unlink(path)


def main():
    folder = sys.argv[1] if len(sys.argv) > 1 else "/dev/shm"
    size = (int(sys.argv[2]) if len(sys.argv) > 2 else 908) << 20
    path = os.path.join(folder, f"write-scaling-{os.getpid()}.tmp")
    print(f"filling {size >> 20} MiB in {folder}, 2 MiB windows, best of 3")
    for mode in ("pwrite", "mmap"):
        for writers in (1, 2):
            best = min(fill(path, size, mode, writers) for _ in range(3))
            print(f"{mode:7} {writers} writer(s): {best:.3f} s  {size / best / 1e9:.2f} GB/s")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""sleep-asyncio.py - the sleep benchmark in Python asyncio.

    python3 bench/sleep-asyncio.py [-n N]        (default 100000)

N tasks each await asyncio.sleep for 100 + (i * 7919 % 100) ms, the formula
of sleep-corio and sleep-uring, gathered until all return.  Prints one line:

    sleep impl=asyncio n=100000 wall_s=2.700 rss_kib=189440

wall_s runs from the first task created to the last one done; rss_kib is
VmHWM.
"""
import argparse
import asyncio
import time


def vmhwm_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return -1


async def main(n):
    start = time.perf_counter()
    tasks = [asyncio.create_task(asyncio.sleep((100 + i * 7919 % 100) / 1000))
             for i in range(n)]
    await asyncio.gather(*tasks)
    wall = time.perf_counter() - start
    print(f"sleep impl=asyncio n={n} wall_s={wall:.3f} rss_kib={vmhwm_kib()}",
          flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="N concurrent sleeps")
    parser.add_argument("-n", type=int, default=100000)
    asyncio.run(main(parser.parse_args().n))

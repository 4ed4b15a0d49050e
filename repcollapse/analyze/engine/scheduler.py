"""The dask scheduler of an analysis run, and a quick, clear refusal of one that cannot be used.

'threads' (default), 'sync', 'local' (a dask.distributed LocalCluster on this machine) or the
address of a running dask.distributed scheduler (``tcp://host:8786``; ``host:8786`` means
tcp). An address is checked before the run starts: its form first, then one connection with a
short timeout, so a typo or a scheduler that is not running fails in seconds with one line
naming what was expected and what was found - not after dask's 30 s default connect timeout
with a traceback, and not after the store was opened and planned.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
from collections.abc import Iterator

import dask

from repcollapse.analyze.plugins import file_plugins

LOCAL = ("threads", "sync", "local")
CONNECT_TIMEOUT_S = 5.0
"""Seconds to wait for a scheduler to answer (dask's default is 30)."""

EXPECTED = (
    "expected 'threads', 'sync', 'local' or the address of a reachable dask.distributed "
    "scheduler like tcp://host:8786"
)


class SchedulerUnavailable(ValueError):
    """The scheduler address is malformed or nothing answered there (a usage error)."""


def _refuse(address: str, why: str) -> SchedulerUnavailable:
    return SchedulerUnavailable(f"scheduler: {EXPECTED}; found {address!r}: {why}")


def check_address(address: str | None, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Raise SchedulerUnavailable unless ``address`` is a local scheduler name or a
    dask.distributed address where a scheduler answers within ``timeout_s`` seconds."""
    if address is None or address in LOCAL:
        return
    from distributed.comm import connect
    from distributed.comm.addressing import parse_address, parse_host_port
    from distributed.comm.registry import backends

    try:
        scheme, loc = parse_address(address)
        if scheme not in backends:
            raise ValueError(f"unknown protocol {scheme!r} (known: {', '.join(sorted(backends))})")
        if scheme != "inproc":  # in-process addresses (a test's own cluster) have no port
            parse_host_port(loc)
    except ValueError as exc:
        raise _refuse(address, str(exc)) from None

    async def probe() -> None:
        # connect's timeout covers the TCP connection, not the handshake after it (a port
        # that accepts and stays silent would hang): the whole exchange gets the timeout
        comm = await asyncio.wait_for(connect(address, timeout=timeout_s), timeout_s)
        await comm.close()

    # a fresh event loop in a thread of its own: the caller may already run one (a notebook)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        try:
            pool.submit(asyncio.run, probe()).result()
        except OSError as exc:  # asyncio's TimeoutError is one
            detail = (
                str(exc).splitlines()[0]
                if str(exc)
                else "a connection was accepted, but no dask.distributed handshake came back"
            )
            raise _refuse(
                address, f"no scheduler answered within {timeout_s:g} s ({detail})"
            ) from None


@contextlib.contextmanager
def scheduler(address: str | None, timeout_s: float = CONNECT_TIMEOUT_S) -> Iterator[int]:
    """Dask scheduler for the run; yields how many passes run at once. None/'threads': local
    threads; 'sync': one thread; 'local': a dask.distributed LocalCluster; else an address."""
    if address in (None, "threads", "sync"):
        n = 1 if address == "sync" else max(1, os.cpu_count() or 1)
        from threadpoolctl import threadpool_limits

        # One BLAS thread per task: parallelism comes from dask. Threaded BLAS inside parallel
        # tasks, or on a machine whose cores are shared, oversubscribes them - measured here on
        # a loaded 2-core machine: eigvalsh(576) 3.5 s with 2 BLAS threads vs 25 ms with 1.
        with (
            dask.config.set(scheduler="sync" if n == 1 else "threads", num_workers=n),
            threadpool_limits(1),
        ):
            yield n
        return
    from distributed import Client, LocalCluster

    check_address(address, timeout_s)
    cluster = (
        LocalCluster(n_workers=os.cpu_count() or 1, threads_per_worker=1, dashboard_address=None)
        if address == "local"
        else None
    )
    try:
        client = Client(cluster if cluster is not None else address)
    except OSError as exc:  # TimeoutError is one  # it answered the check, then went away
        if cluster is not None:
            cluster.close()
        raise _refuse(str(address), str(exc).splitlines()[0]) from None
    for path in file_plugins():  # workers import user metric files under the same module name
        client.upload_file(str(path))
    try:
        yield max(1, sum(client.nthreads().values()))
    finally:
        client.close()
        if cluster is not None:
            cluster.close()

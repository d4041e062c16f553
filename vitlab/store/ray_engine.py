"""The Ray Data engine: the store's shards computed by a Ray actor pool (``engine="ray"``).

The driver cuts the rows still missing into deterministic *units*: consecutive batches of
the store's fixed batch grid (:func:`~vitlab.store.shards.batch_grid`), never crossing a
grid block, at most ``unit_rows`` rows each. A ``ray.data`` dataset of units goes through
``map_batches`` to a pool of actors (one per GPU when the backbone is on CUDA, else CPU
actors); each actor holds a copy of the backbone and the :class:`DataSource`, runs
:func:`~vitlab.store.extract.extract` on its unit (the same batches, the same forward
code as the local engine) and writes the unit as one ordinary shard of the cache entry.
So the entry's key, shard layout and consolidated arrays are those of the local engine
(byte-identical on CPU), and a later local ``embed`` or ``eval`` is a cache hit.

Faults: a shard is done only once its file and checksummed sidecar are on disk, so a
killed driver or a lost actor loses only unfinished units; Ray restarts a lost actor and
retries its unit (``max_restarts``/``max_task_retries``), and a rerun of the same command
computes exactly the rows no valid shard covers. On a cluster the cache directory must be
a filesystem every node sees (the actors write the shards there).

Our own code is only the unit plan and the glue; scheduling, retries and back-pressure are
Ray Data's.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from vitlab.backbones.base import Backbone
from vitlab.data.base import DataSource
from vitlab.errors import ConfigError, DataError, VitlabError
from vitlab.store.extract import ExtractStats, extract
from vitlab.store.progress import image_progress
from vitlab.store.shards import batch_grid

ENGINES = ("local", "ray")
INSTALL_HINT = "pip install 'vitlab[ray]'"
DEFAULT_UNIT_ROWS = 512  # CPU actors; GPU actors take whole grid blocks (their DataLoader starts once per unit)
RETRIES = 2  # restarts of a lost actor, and retries of its unit, before the run stops


def import_ray() -> Any:
    """Import Ray (and Ray Data), or raise a one-line ConfigError saying how to install it.

    Example:
        >>> ray = import_ray()
        >>> ray.__name__
        'ray'
    """
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise ConfigError(f"engine 'ray' needs Ray Data, which is not installed ({e}); install it with "
                          f"{INSTALL_HINT}, or use --engine local.") from None
    return ray


RAY_OPTIONS = ("num_actors", "unit_rows", "num_workers", "hook")


def check_engine(engine: str, address: str | None, options: dict[str, Any] | None = None) -> None:
    """Validate the engine options before anything is loaded (Ray's import included).

    Example:
        >>> check_engine("local", None)
        >>> check_engine("spark", None)
        Traceback (most recent call last):
        ...
        vitlab.errors.ConfigError: unknown engine 'spark'; choose one of local, ray.
    """
    if engine not in ENGINES:
        raise ConfigError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}.")
    if (address is not None or options) and engine != "ray":
        raise ConfigError("--ray-address and ray_options apply only to --engine ray; add --engine ray or drop them.")
    unknown = sorted(set(options or {}) - set(RAY_OPTIONS))
    if unknown:
        raise ConfigError(f"unknown ray_options {unknown}; allowed: {', '.join(RAY_OPTIONS)}.")
    for k in ("num_actors", "unit_rows"):
        v = (options or {}).get(k)
        if v is not None and (not isinstance(v, int) or v < 1):
            raise ConfigError(f"ray_options {k} must be a whole number >= 1, got {v!r}.")
    if engine == "ray":
        import_ray()
        if address is not None:
            check_reachable(address)


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Raise a one-line ConfigError unless ``host:port`` of a Ray address accepts a TCP connection.

    ``ray.init`` retries an unreachable address for minutes; this check answers in ``timeout``
    seconds. ``auto`` and ``local`` (resolved by Ray itself) are not checked.

    Example:
        >>> check_reachable("auto")
        >>> check_reachable("127.0.0.1:1")
        Traceback (most recent call last):
        ...
        vitlab.errors.ConfigError: cannot reach the Ray cluster at '127.0.0.1:1' (Connection refused). Check the address (ray status on the head node prints it), or drop --ray-address to start a local instance.
    """
    import socket

    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--ray-address {address!r} is not host:port (e.g. 10.0.0.5:6379, ray://head:10001, "
                          "or auto).")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise ConfigError(f"cannot reach the Ray cluster at {address!r} ({e.strerror or e}). Check the address "
                          "(ray status on the head node prints it), or drop --ray-address to start a local "
                          "instance.") from None
    if not _speaks_grpc(host.strip("[]"), int(port), timeout):
        raise ConfigError(f"{address!r} accepts connections but is not a Ray cluster (no gRPC answer; Ray's GCS "
                          "port is usually 6379, its client port 10001). Check the address (ray status on the head "
                          "node prints it), or drop --ray-address to start a local instance.")


def plan_units(ranges: list[tuple[int, int]], block: int, batch_size: int,
               unit_rows: int = DEFAULT_UNIT_ROWS) -> list[tuple[int, int]]:
    """The work units ``[start, stop)`` covering ``ranges``: whole grid batches, within one block.

    A unit is a run of consecutive batches of :func:`~vitlab.store.shards.batch_grid` with at
    most ``max(unit_rows, batch_size)`` rows that never crosses a block boundary or a gap, so
    every row is computed in the same batch as by the local engine, and the plan is a pure
    function of its arguments (the same units on every run and every resume).

    Example:
        >>> plan_units([(0, 10)], block=8, batch_size=2, unit_rows=4)
        [(0, 4), (4, 8), (8, 10)]
        >>> plan_units([(3, 8), (16, 18)], block=8, batch_size=3, unit_rows=100)
        [(3, 8), (16, 18)]
    """
    units: list[tuple[int, int]] = []
    for b0, b1 in batch_grid(ranges, block, batch_size):
        if units:
            u0, u1 = units[-1]
            if u1 == b0 and b0 % block != 0 and b1 - u0 <= max(unit_rows, batch_size):
                units[-1] = (u0, b1)
                continue
        units.append((b0, b1))
    return units


class EmbedActor:
    """One Ray actor: a copy of the backbone and the source; embeds whole units into shards.

    ``__call__`` takes a batch of units (``{"start": [k], "stop": [k]}``) and returns per unit
    its shard sidecar (JSON), measured times, and an error message instead of raising for a
    bad image (so the driver reports it in one line and the finished shards stay).
    """

    def __init__(self, backbone: Backbone, source: DataSource, shard_dir: str, cfg: dict[str, Any],
                 hook: Callable[[int, int], None] | None = None) -> None:
        import torch

        torch.set_num_threads(max(1, int(cfg.get("threads", 1))))
        if cfg.get("cuda"):
            backbone = backbone.to(torch.device("cuda"))
        self.backbone, self.source, self.shard_dir, self.cfg, self.hook = backbone, source, Path(shard_dir), cfg, hook

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        c = self.cfg
        out: dict[str, list[Any]] = {k: [] for k in ("start", "stop", "sidecar", "images", "forward_seconds",
                                                     "data_seconds", "seconds", "peak_memory_mb", "error")}
        for start, stop in zip(batch["start"].tolist(), batch["stop"].tolist()):
            sides: list[dict[str, Any]] = []
            err, st = "", ExtractStats()
            try:
                if self.hook is not None:
                    self.hook(start, stop)
                st = extract(self.backbone, self.source, [(start, stop)], self.shard_dir, block=c["block"],
                             flush_seconds=None, layers=tuple(c["layers"]), pools=tuple(c["pools"]),
                             batch_size=c["batch_size"], num_workers=c["num_workers"], precision=c["precision"],
                             on_error=c["on_error"], progress=False, tokens=c["tokens"], on_shard=sides.append)
            except VitlabError as e:
                err = f"{type(e).__name__}: {e}"
            for k, v in (("start", start), ("stop", stop), ("sidecar", json.dumps(sides)), ("images", st.images),
                         ("forward_seconds", st.forward_seconds), ("data_seconds", st.data_seconds),
                         ("seconds", st.seconds), ("peak_memory_mb", st.peak_memory_mb), ("error", err)):
                out[k].append(v)
        return {k: np.asarray(v) for k, v in out.items()}


def extract_ray(backbone: Backbone, source: DataSource, ranges: list[tuple[int, int]], shard_dir: Path, *,
                block: int, layers: tuple[int, ...], pools: tuple[str, ...], batch_size: int, precision: str,
                on_error: str, progress: bool, tokens: str | None = None, address: str | None = None,
                num_actors: int | None = None, unit_rows: int | None = None, num_workers: int | None = None,
                on_shard: Callable[[dict[str, Any]], None] | None = None,
                hook: Callable[[int, int], None] | None = None) -> ExtractStats:
    """Compute the rows in ``ranges`` with a Ray actor pool; each unit becomes one shard in ``shard_dir``.

    Uses the running Ray instance when there is one, else connects to ``address`` (``auto``,
    ``ray://host:10001``, ``host:6379``) or starts a local instance, which it shuts down afterwards.

    Args:
        ranges, block, layers, pools, batch_size, precision, on_error, tokens: as
            :func:`~vitlab.store.extract.extract` (the same batch grid).
        num_actors: actor-pool size; default one per GPU when the backbone is on CUDA, else one
            per CPU of the cluster.
        unit_rows: the largest unit (shard) in rows, rounded to whole batches; default
            :data:`DEFAULT_UNIT_ROWS` for CPU actors, the grid block for GPU actors.
        num_workers: DataLoader workers inside each actor (decoding for its forward pass); default 0
            for CPU actors (one CPU each), and for GPU actors the cluster's CPUs per GPU (at most 8)
            less one, the actor reserving that many CPUs.
        on_shard: called on the driver with each shard's sidecar as its unit finishes.
        hook: called in the actor as ``hook(start, stop)`` before each unit (tests simulate faults).

    Raises:
        ConfigError: Ray missing, or ``address`` unreachable.
        DataError: a bad image with ``on_error="raise"`` (after the other units finished: their
            shards are kept), or a unit that failed after every retry.

    Example:
        >>> stats = extract_ray(bb, src, [(0, 2000)], shard_dir, block=4096, layers=(5,),
        ...                     pools=("cls", "mean"), batch_size=64, precision="fp32",
        ...                     on_error="raise", progress=False)  # starts a Ray instance: slow  # doctest: +SKIP
    """
    ray = import_ray()
    started = _connect(ray, address)
    ctx = ray.data.DataContext.get_current()
    bars, log = ctx.enable_progress_bars, logging.getLogger("ray.data")
    level, ctx.enable_progress_bars = log.level, False  # our own bar (on a terminal only) and no INFO lines
    log.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():  # Ray 2.60 deprecates per-actor retry options without a replacement yet
            warnings.filterwarnings("ignore", message=".*ray_remote_args.* deprecated")
            return _run(ray, backbone, source, ranges, shard_dir, block=block, layers=layers, pools=pools,
                        batch_size=batch_size, precision=precision, on_error=on_error, progress=progress,
                        tokens=tokens, num_actors=num_actors, unit_rows=unit_rows, num_workers=num_workers,
                        on_shard=on_shard, hook=hook)
    finally:
        ctx.enable_progress_bars = bars
        log.setLevel(level)
        if started:
            ray.shutdown()


@contextmanager
def quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (C++ libraries log there, past Python's ``logging``) for the block.

    Example:
        >>> with quiet_stderr():
        ...     _ = os.write(2, b"not shown\\n")
    """
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _speaks_grpc(host: str, port: int, timeout: float) -> bool:
    """Whether ``host:port`` answers the HTTP/2 connection preface with a SETTINGS frame, as every gRPC server
    (Ray's GCS, the Ray client server) does at once; a web server, a database or a closed socket does not."""
    import socket

    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # + empty SETTINGS
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(preface)
            head = b""
            while len(head) < 9:
                chunk = s.recv(9 - len(head))
                if not chunk:
                    return False
                head += chunk
    except OSError:
        return False
    return head[3] == 0x04  # frame type SETTINGS


def _connect(ray: Any, address: str | None) -> bool:
    """Join the running instance, or ``address``, or start a local one. Returns whether we started it."""
    if ray.is_initialized():
        return False
    kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "WARNING"}
    try:
        with quiet_stderr():  # Ray's core logs its retries straight to file descriptor 2
            ray.init(address=address, **kw) if address else ray.init(**kw)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as e:
        ray.shutdown()
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        where = f"the Ray cluster at {address!r}" if address else "a local Ray instance"
        raise ConfigError(f"cannot connect to {where} ({reason}). Check the address (ray status on the head "
                          "node prints it), or drop --ray-address to start a local instance.") from None
    return True


def _run(ray: Any, backbone: Backbone, source: DataSource, ranges: list[tuple[int, int]], shard_dir: Path, *,
         block: int, layers: tuple[int, ...], pools: tuple[str, ...], batch_size: int, precision: str,
         on_error: str, progress: bool, tokens: str | None, num_actors: int | None, unit_rows: int | None,
         num_workers: int | None,
         on_shard: Callable[[dict[str, Any]], None] | None,
         hook: Callable[[int, int], None] | None) -> ExtractStats:
    cuda = backbone.device.type == "cuda"
    resources = ray.cluster_resources()
    if num_actors is None:
        num_actors = int(resources.get("GPU", 0)) if cuda else int(resources.get("CPU", 1))
    cpus_per_actor = 1
    if cuda:  # feed each GPU: its actor reserves the CPUs per GPU and decodes in that many DataLoader workers
        cpus_per_actor = max(1, min(8, int(resources.get("CPU", 1) // max(1, resources.get("GPU", 1)))))
    if num_workers is None:
        num_workers = cpus_per_actor - 1
    units = plan_units(ranges, block, batch_size, unit_rows or (block if cuda else DEFAULT_UNIT_ROWS))
    num_actors = max(1, min(num_actors, len(units)))
    cfg = {"block": block, "layers": list(layers), "pools": list(pools), "batch_size": batch_size,
           "precision": precision, "on_error": on_error, "tokens": tokens, "threads": 1, "cuda": cuda,
           "num_workers": num_workers}
    ds = ray.data.from_items([{"start": a, "stop": b} for a, b in units])
    out = ds.map_batches(EmbedActor, batch_size=1, compute=ray.data.ActorPoolStrategy(size=num_actors),
                         fn_constructor_kwargs={"backbone": backbone, "source": source, "shard_dir": str(shard_dir),
                                                "cfg": cfg, "hook": hook},
                         num_cpus=cpus_per_actor, num_gpus=1 if cuda else 0, **_retries())
    stats = ExtractStats(device=f"ray:{'cuda' if cuda else 'cpu'}", batch_size=batch_size, num_workers=num_workers,
                         engine="ray", extra={"actors": num_actors, "units": len(units)},
                         memory_kind="cuda_max_allocated_per_actor" if cuda else "cpu_peak_rss_per_actor")
    errors: list[tuple[int, str]] = []
    t0 = time.perf_counter()
    with image_progress(disable=not progress) as bar:
        task = bar.add_task(f"embed {backbone.name} (ray, {num_actors} actor{'s' if num_actors > 1 else ''})",
                            total=sum(b - a for a, b in units))
        try:
            for row in out.iter_rows():
                if row["error"]:
                    errors.append((int(row["start"]), str(row["error"])))
                for side in json.loads(row["sidecar"]):
                    stats.shards_written += 1
                    if on_shard is not None:
                        on_shard(side)
                stats.images += int(row["images"])
                stats.forward_seconds += float(row["forward_seconds"])
                stats.data_seconds += float(row["data_seconds"])
                stats.peak_memory_mb = max(stats.peak_memory_mb, float(row["peak_memory_mb"]))
                bar.advance(task, int(row["stop"]) - int(row["start"]))
        except ray.exceptions.RayError as e:
            raise DataError(f"the Ray engine stopped: {_first_line(e)}. Finished shards are kept: run the same "
                            "command again to compute only the missing ones.") from None
    stats.seconds = time.perf_counter() - t0
    if errors:
        start, msg = min(errors)
        raise DataError(f"{len(errors)} unit(s) failed (first at row {start}: {msg}); the other units' shards "
                        "are kept, so the same command after the fix computes only the missing rows.")
    return stats


def _retries() -> dict[str, int]:
    """Actor options: a lost actor is restarted and its unit retried ``RETRIES`` times, then the run stops."""
    return {"max_restarts": RETRIES, "max_task_retries": RETRIES}


def _first_line(e: BaseException) -> str:
    """The meaningful line of a (possibly nested, multi-line) Ray exception."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "Error" in ln or "error" in ln:
            return ln[:300]
    return (lines[-1] if lines else type(e).__name__)[:300]

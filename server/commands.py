"""``warpdiff serve``: run the local server (one process, the model stays in memory).

    warpdiff serve --bind tcp://127.0.0.1:5557 --model builtin --device cpu \\
        --cache ~/.cache/warpdiff/shots --queue-limit 16 [--curve-keys DIR [--make-keys]] \\
        [--allow-paths DIR ...] [--cache-max-gb GB] [--insecure-no-auth]

A non-loopback ``--bind`` needs ``--curve-keys`` (or ``--insecure-no-auth``): without them the
server refuses to start and says why on stderr.

The first line on stdout is ``warpdiff server listening on ADDRESS`` (the real port when
``--bind`` ends in ``:0``); SIGTERM and Ctrl-C stop it cleanly (finished frames are kept).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from warpcore.errors import InvalidInput


def default_cache() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(base) / "warpdiff" / "shots")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bind",
        default="tcp://127.0.0.1:5557",
        help="ZeroMQ endpoint (default loopback only; ':0' picks a free port)",
    )
    parser.add_argument("--model", default="builtin", help="default model: builtin, gaussian, ...")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
    parser.add_argument("--cache", default=default_cache(), help="shot cache folder")
    parser.add_argument("--queue-limit", type=int, default=16, help="most shots waiting")
    parser.add_argument("--curve-keys", default=None, help="CURVE key folder: refuse other clients")
    parser.add_argument(
        "--make-keys",
        action="store_true",
        help="create the key folder (server + one client); refuses if keys are there already",
    )
    parser.add_argument(
        "--add-client",
        default=None,
        metavar="NAME",
        help="add a client key pair NAME beside the existing keys (--curve-keys DIR)",
    )
    parser.add_argument(
        "--allow-paths",
        action="append",
        default=None,
        metavar="DIR",
        help="clients may name files under DIR in 'paths' (repeatable; symlinks resolved). "
        "Default: your home folder on a loopback bind, nothing otherwise",
    )
    parser.add_argument(
        "--cache-max-gb",
        type=float,
        default=None,
        help="largest shot cache; least recently used finished shots are evicted "
        "(default: half the free disk)",
    )
    parser.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="serve a non-loopback address without CURVE keys (anyone who reaches it may use it)",
    )
    parser.add_argument(
        "--max-part-mb", type=int, default=512, help="largest binary part accepted (MiB)"
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING")
    cluster = parser.add_argument_group("Ray cluster (README 'Scale-out on Ray')")
    cluster.add_argument(
        "--ray",
        default=None,
        metavar="auto|HOST:PORT",
        help="run shots on a Ray cluster: 'auto' (the cluster this machine joined with "
        "`ray start`) or the head node's address; the protocol stays the same",
    )
    cluster.add_argument(
        "--ray-gpus-per-actor",
        type=float,
        default=None,
        help="GPUs per worker actor (default 1 if the cluster has GPUs, else 0: CPU actors)",
    )
    cluster.add_argument(
        "--ray-cpus-per-actor", type=float, default=1.0, help="CPUs reserved per actor"
    )
    cluster.add_argument(
        "--ray-actors", type=int, default=None, help="worker actors (default: one per GPU)"
    )
    cluster.add_argument("--ray-chunk", type=int, default=None, help="frames per chunk of one shot")
    cluster.add_argument(
        "--ray-overlap",
        type=int,
        default=None,
        help="frames a chunk runs before its first frame and drops (re-establish guidance)",
    )
    cluster.add_argument(
        "--ray-flow-cpus", type=float, default=1.0, help="CPUs per flow worker (actor)"
    )
    cluster.add_argument(
        "--ray-flow-actors",
        type=int,
        default=None,
        help="warm flow workers (default: one per chunk actor, as the free CPUs allow)",
    )
    cluster.add_argument(
        "--ray-threads", type=int, default=None, help="torch threads per actor (default: torch's)"
    )


def run(args: argparse.Namespace) -> int:
    import zmq

    from server.app import InsecureBind, Server, ServerConfig
    from server.protocol import Limits

    if args.queue_limit < 1:
        raise InvalidInput(f"--queue-limit: expected an integer >= 1, got {args.queue_limit}")
    from warpcore.devices import check_device

    check_device(args.device)  # one line listing what this build has, before any work
    if args.max_part_mb < 1:
        raise InvalidInput(f"--max-part-mb: expected an integer >= 1, got {args.max_part_mb}")
    if not args.bind.startswith(("tcp://", "ipc://", "inproc://")):
        raise InvalidInput(f"--bind: expected tcp://HOST:PORT or ipc://PATH, got {args.bind!r}")
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    if args.cache_max_gb is not None and not args.cache_max_gb > 0:
        raise InvalidInput(f"--cache-max-gb: expected a number > 0, got {args.cache_max_gb}")
    if args.make_keys or args.add_client:
        if not args.curve_keys:
            raise InvalidInput("--make-keys / --add-client: give the folder with --curve-keys DIR")
        from server.keys import add_client, make_keys

        try:
            if args.make_keys:
                folder = make_keys(args.curve_keys)
                name = "client"
            else:
                name = args.add_client
                folder = add_client(args.curve_keys, name)
        except FileExistsError as exc:
            raise InvalidInput(str(exc)) from None
        print(f"keys written to {folder}: give hosts {name}.key_secret and server.key")
    limits = Limits(max_part_bytes=args.max_part_mb * 2**20)
    ray_config = _cluster_config(args) if args.ray is not None else None
    if ray_config is not None:
        from server.cluster import ClusterUnreachable, connect

        try:
            connect(ray_config)
        except ClusterUnreachable as exc:  # on stderr whatever the log level; non-zero exit
            print(f"warpdiff serve: {exc}", file=sys.stderr, flush=True)
            return 3
    config = ServerConfig(
        cache_dir=args.cache,
        bind=args.bind,
        model=args.model,
        device=args.device,
        queue_limit=args.queue_limit,
        curve_keys=args.curve_keys,
        limits=limits,
        allow_paths=tuple(args.allow_paths) if args.allow_paths is not None else None,
        cache_max_bytes=None if args.cache_max_gb is None else int(args.cache_max_gb * 2**30),
        insecure_no_auth=args.insecure_no_auth,
        ray=ray_config,
    )
    try:
        server = Server(config)
    except InsecureBind as exc:  # on stderr whatever the log level
        print(f"warpdiff serve: {exc}", file=sys.stderr, flush=True)
        return 2
    except FileNotFoundError as exc:
        raise InvalidInput(str(exc)) from None
    except zmq.ZMQError as exc:  # address in use, bad interface
        raise InvalidInput(f"--bind {args.bind}: {exc}") from None

    def stop(_signum: int, _frame: object) -> None:
        server.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"warpdiff server listening on {server.address}", flush=True)
    server.serve_forever()
    print("warpdiff server stopped", file=sys.stderr, flush=True)
    return 0


def _cluster_config(args: argparse.Namespace) -> object:
    from server.cluster import ClusterConfig

    defaults = ClusterConfig()
    return ClusterConfig(
        address=args.ray,
        gpus_per_actor=args.ray_gpus_per_actor,
        cpus_per_actor=args.ray_cpus_per_actor,
        actors=args.ray_actors,
        chunk=defaults.chunk if args.ray_chunk is None else args.ray_chunk,
        overlap=defaults.overlap if args.ray_overlap is None else args.ray_overlap,
        threads=args.ray_threads,
        flow_cpus=args.ray_flow_cpus,
        flow_actors=args.ray_flow_actors,
    )

"""Entry points: ``gateway serve | check-config | demo | token`` (``gateway --help``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib
import importlib.metadata
import logging
import os
import platform
import signal
import socket
import sys
from collections.abc import Generator, Sequence
from pathlib import Path
from types import FrameType, ModuleType

import uvicorn

from gateway.app import Gateway, build
from gateway.config import Config, ConfigError, load
from gateway.config.document import read_redis_url
from gateway.observability import jsonlog
from gateway.ratelimit.redis_limiter import RedisClient
from gateway.server import workers
from gateway.server.protocol import ConnectionLimits, protocol_class

DEFAULT_CONFIG = "config/gateway.toml"
#: The cyclic collector's young-generation threshold once serving (allocations, default 700).
GC_THRESHOLD = 10_000
log = logging.getLogger("gateway.cli")


def _setup_logging() -> None:
    """Every line on stderr is one JSON object (``gateway.jsonlog``)."""
    jsonlog.configure(os.environ.get("GATEWAY_LOG_LEVEL"))


def connection_limits(config: Config, *, in_flight: bool = True) -> ConnectionLimits:
    server = config.server
    return ConnectionLimits(
        header_timeout_s=server.header_timeout_s,
        first_request_timeout_s=server.first_request_timeout_s,
        max_waiting=server.max_waiting_connections,
        max_in_flight=server.max_concurrent_connections if in_flight else None,
    )


def uvicorn_config(app: Gateway, host: str, port: int, config: Config) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        # httptools with header deadlines, a cap on connections waiting for a request and
        # one on requests in flight (503 beyond it): slow-client floods (checklist F3).
        http=protocol_class(connection_limits(config)),
        loop="uvloop",
        proxy_headers=False,
        server_header=False,
        access_log=False,
        log_config=None,
        timeout_keep_alive=30,
        timeout_graceful_shutdown=int(config.server.drain_timeout_s),
    )


class GatewayServer(uvicorn.Server):
    """uvicorn's server with the gateway's drain hook.

    On SIGTERM (or SIGINT) readiness fails at once (``gateway.draining``), then uvicorn's own
    handler starts its shutdown: stop accepting, close idle keep-alive connections, let
    in-flight requests and streams finish for up to ``timeout_graceful_shutdown`` (the drain
    timeout), cancel what is left, then the lifespan shutdown closes the upstream and Redis
    clients. Kubernetes sends SIGTERM only after the pod's ``preStop`` sleep, which is the
    window in which new connections are still served while endpoints are removed.
    """

    def __init__(self, config: uvicorn.Config, gateway: Gateway) -> None:
        super().__init__(config)
        self.gateway = gateway

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)  # the gateway's lifespan start-up runs in here
        # Everything built so far lives as long as the process: keep it out of the cyclic
        # collector's generations so full collections under load do not walk it again.
        gc.collect()
        gc.freeze()
        # A request allocates a few thousand container objects that its end frees by
        # reference counting; at the default threshold (700) the young generation is
        # collected several times per request, each time walking every in-flight request's
        # objects. Cyclic garbage waits at most this many allocations longer.
        gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.gateway.draining = True  # a signal handler: set flags only, no I/O
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        log.info(
            "shutting down: readiness fails; in-flight requests get up to %ss",
            self.config.timeout_graceful_shutdown,
        )
        await super().shutdown(sockets)


def _after_drain(sig: int, frame: FrameType | None) -> None:
    """uvicorn re-raises the signal it drained on; a clean drain then exits 0, not 128+sig."""


def take_stop_signals(server: uvicorn.Server) -> None:
    """SIGTERM/SIGINT stop ``server`` from now on, also before ``server.serve`` takes the
    signals itself (while the metrics listener starts): the server then starts, skips its
    main loop and shuts down (a worker signalled in that window used to run on, and its
    supervisor with it). After a drain uvicorn re-raises the signal here: a clean drain
    exits 0, not 128+sig."""

    def stop_or_after_drain(sig: int, frame: FrameType | None) -> None:
        server.should_exit = True
        _after_drain(sig, frame)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop_or_after_drain)


class MetricsServer(uvicorn.Server):
    """The metrics listener, beside the gateway's server in the same event loop.

    It leaves signals to the gateway's server, which stops it after its own drain, so the
    metrics stay scrapeable while in-flight requests finish.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def metrics_server(gateway: Gateway, config: Config) -> MetricsServer | None:
    """``server.metrics_host:metrics_port`` serving only ``/metrics``; None when port is 0."""
    if not config.server.metrics_port or gateway.metrics_app is None:
        return None
    return MetricsServer(
        uvicorn.Config(
            gateway.metrics_app,
            host=config.server.metrics_host,
            port=config.server.metrics_port,
            lifespan="off",
            http=protocol_class(connection_limits(config, in_flight=False)),
            proxy_headers=False,
            server_header=False,
            access_log=False,
            log_config=None,
            timeout_keep_alive=5,
        )
    )


async def serve_with_metrics(
    server: uvicorn.Server,
    metrics: uvicorn.Server | None,
    sockets: list[socket.socket] | None = None,
) -> None:
    """Run the gateway's server (on ``sockets`` when given) and, when configured, the metrics
    listener (started first)."""
    if metrics is None:
        await server.serve(sockets)
        return
    task = asyncio.create_task(metrics.serve(), name="metrics-server")
    while not metrics.started and not task.done():  # noqa: ASYNC110 (uvicorn has no event)
        await asyncio.sleep(0.01)
    if task.done():
        await task
        raise RuntimeError("the metrics listener did not start")
    try:
        await server.serve(sockets)
    finally:
        metrics.should_exit = True
        await task


def _gateway(config: Config, redis_client: RedisClient | None = None) -> Gateway:
    """The gateway with every backend's credential built from ``config.upstream``
    (``make_credential``: the API key or Entra workload identity, from the process
    environment)."""
    return build(config, environ=os.environ, redis_client=redis_client)


def cmd_serve(args: argparse.Namespace) -> int:
    _setup_logging()
    try:
        config = read_redis_url(load(args.config))  # redis.url_file, read once at start
        if config.demo:
            raise ConfigError(
                ["demo: a demo config cannot be served in production (use `gateway demo`)"]
            )
        if config.server.workers > 1 and args.worker is None:  # the supervisor only
            argvs = [workers.worker_argv(args.config, i) for i in range(config.server.workers)]
            return workers.supervise(argvs, config.server.metrics_port)
        gateway = _gateway(config)
    except ConfigError as exc:
        log.error(
            "invalid configuration: %s",
            "; ".join(exc.problems),
            extra={"fields": {"problems": exc.problems}},
        )
        return 1
    server = GatewayServer(
        uvicorn_config(gateway, config.server.host, config.server.port, config), gateway
    )
    take_stop_signals(server)
    # A worker of several (``server.workers``) shares the port with its siblings.
    sockets = (
        None
        if args.worker is None
        else [workers.reuse_port_socket(config.server.host, config.server.port)]
    )
    with asyncio.Runner(loop_factory=server.config.get_loop_factory()) as runner:
        runner.run(serve_with_metrics(server, metrics_server(gateway, config), sockets))
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        load(args.path, environ={})
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem)
        print(f"{args.path}: {len(exc.problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"{args.path}: ok")
    return 0


def _checkout_tools() -> ModuleType | None:
    """The demo and its fake Azure live in the source checkout's ``tests/`` (the production
    image does not carry them). Found next to this package in an editable install."""
    root = Path(__file__).resolve().parent.parent
    if not (root / "tests" / "demo.py").is_file():
        return None
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return importlib.import_module("tests.demo")


def _demo_tools() -> ModuleType:
    tools = _checkout_tools()
    if tools is None:
        print(
            "`gateway demo` and `gateway token` need a source checkout of the gateway "
            "(git clone, then pip install -e '.[test]'): the demo and its fake Azure are "
            "not part of the production package",
            file=sys.stderr,
        )
        raise SystemExit(2)
    return tools


def cmd_demo(args: argparse.Namespace) -> int:
    _setup_logging()
    return int(_demo_tools().run(args.host, args.port, args.metrics_port))


def cmd_token(args: argparse.Namespace) -> int:
    return int(
        _demo_tools().token_command(
            args.config,
            port=args.port,
            namespace=args.namespace,
            service_account=args.service_account,
            ttl_s=args.ttl,
        )
    )


#: ``gateway token --ttl``: from one second to one day (longer is no demo's business).
TTL_RANGE_S = (1, 86_400)


def ttl_seconds(text: str) -> int:
    """``--ttl``: whole seconds within ``TTL_RANGE_S`` (a 0 or negative lifetime would mint
    a token that is already expired)."""
    low, high = TTL_RANGE_S
    value = int(text) if text.isascii() and text.isdigit() else None  # no sign, "_", space
    if value is None or not low <= value <= high:
        raise argparse.ArgumentTypeError(
            f"must be a whole number of seconds from {low} to {high} (one day), not {text!r}"
        )
    return value


def port_number(text: str) -> int:
    value = int(text) if text.isascii() and text.isdigit() else 0
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port from 1 to 65535, not {text!r}")
    return value


def version() -> str:
    try:
        own = importlib.metadata.version("assistants-gateway")
    except importlib.metadata.PackageNotFoundError:
        own = "unknown (not installed)"
    return f"gateway {own} (Python {platform.python_version()})"


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every option's help ends with its default, unless it has none or says it itself."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if (
            action.option_strings
            and action.default not in (None, False, argparse.SUPPRESS)
            and "default" not in text
        ):
            text += " (default: %(default)s)"
        return text


DESCRIPTION = """An authenticating reverse proxy for the Azure OpenAI Assistants API and the v1 API
(Responses, Conversations, Files).

  gateway demo                              a guided tour on 127.0.0.1:8080 (no Azure needed)
  gateway token --namespace team-b          a token of another tenant for the running demo
  gateway check-config config/gateway.toml  validate a config file
  gateway serve --config config/gateway.toml

gateway COMMAND --help describes each command."""


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="gateway", description=DESCRIPTION, formatter_class=HelpFormatter
    )
    top.add_argument("--version", action="version", version=version())
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str, description: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name, help=summary, description=description, formatter_class=HelpFormatter
        )

    serve = command(
        "serve",
        "run the gateway (production)",
        "Serve the gateway with a config file; SIGTERM drains in-flight requests first.",
    )
    serve.add_argument(
        "--config",
        default=os.environ.get("GATEWAY_CONFIG", DEFAULT_CONFIG),
        metavar="PATH",
        help=f"the config file (default: $GATEWAY_CONFIG, else {DEFAULT_CONFIG})",
    )
    serve.add_argument(
        "--worker",
        type=int,
        default=None,
        metavar="N",
        help="internal: run as worker N of server.workers, started by the supervisor "
        "(default: none, the only process or the supervisor)",
    )
    serve.set_defaults(func=cmd_serve)
    check = command(
        "check-config",
        "validate a config file; exit 1 on problems",
        "Read and validate a config file: print every problem with its path, exit 1 if any.",
    )
    check.add_argument("path", metavar="PATH", help="the config file to check")
    check.set_defaults(func=cmd_check_config)
    demo = command(
        "demo",
        "a guided tour: the gateway and a fake Azure on 127.0.0.1",
        "Run the real gateway in front of a fake Azure, with two tenants (demo and team-b), "
        "and print a\nguided tour to paste into a shell. Serves until Ctrl-C or SIGTERM.",
    )
    demo.add_argument("--host", default="127.0.0.1", help="the gateway's address")
    demo.add_argument("--port", type=port_number, default=8080, help="the gateway's port")
    demo.add_argument(
        "--metrics-port",
        type=port_number,
        default=None,
        metavar="PORT",
        help="the metrics listener's port on 127.0.0.1 (default: a free port, printed)",
    )
    demo.set_defaults(func=cmd_demo)
    token = command(
        "token",
        "mint a token for the running demo",
        "Print a token signed with a running demo's key (demo configs only).",
    )
    token.add_argument(
        "--port",
        type=port_number,
        default=None,
        help="the demo's port (default: the only demo running)",
    )
    token.add_argument(
        "--config",
        default=None,
        metavar="PATH",
        help="a demo's gateway.toml, its signing key beside it (default: the running demo's)",
    )
    token.add_argument("--namespace", default="demo", help="the tenant: a Kubernetes namespace")
    token.add_argument("--service-account", default="demo-app", help="the caller in it")
    token.add_argument(
        "--ttl",
        type=ttl_seconds,
        default=3600,
        metavar="SECONDS",
        help=f"the token's lifetime in seconds, {TTL_RANGE_S[0]} to {TTL_RANGE_S[1]}",
    )
    token.set_defaults(func=cmd_token)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())

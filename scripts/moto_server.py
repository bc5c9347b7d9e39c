"""moto's server (as `moto_server -H HOST -p PORT`), handling one request at a time.

moto's backends are not thread-safe: under `moto_server`, concurrent UpdateItem ADDs on one
item lose updates (seen: 50 concurrent adds of 1 ended at 48, two callers got the same total).
DynamoDB makes every single-item write and every transaction atomic, and the storage
conformance suite tests exactly that, so this launcher runs moto's own WSGI app behind one lock.
Connections are still accepted by many threads (HTTP/1.1 keep-alive works); only the handling
of requests is serialised.
"""

import argparse
import os
import signal
import sys
import threading

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple


class Serialized:
    """A WSGI app that lets one request at a time into `app`."""

    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        with self.lock:
            # Produce the whole body inside the lock: an iterator could defer work.
            return list(self.app(environ, start_response))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    args = parser.parse_args()
    os.environ.setdefault("MOTO_PORT", str(args.port))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))

    app = DomainDispatcherApplication(create_backend_app)
    app.debug = True  # as moto_server does
    run_simple(
        args.host,
        args.port,
        Serialized(app),
        threaded=True,
        request_handler=MotoRequestHandler,
    )


if __name__ == "__main__":
    main()

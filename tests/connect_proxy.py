"""A small HTTP CONNECT proxy on loopback, for tests only.

`ConnectProxy(hosts={"vault.proxied.test": "127.0.0.1"})` listens on
127.0.0.1 (a free port) and tunnels ``CONNECT host:port`` requests. Names in
``hosts`` resolve to the address given there and nowhere else (the client
itself cannot resolve them: the site where the proxy is the only way out);
other names are resolved normally. Every CONNECT is recorded (`connects()`):
target, whether credentials came and were right, the answer. With
``require_auth`` set, a CONNECT without the right ``Proxy-Authorization: Basic``
(``username``/``password``) gets 407. Anything but CONNECT gets 405.

Run alone: ``python3 tests/connect_proxy.py [--map NAME=ADDR]`` prints its URL.
"""

import argparse
import base64
import secrets
import select
import socket
import socketserver
import sys
import threading
import time

__all__ = ["ConnectProxy"]


class _Handler(socketserver.BaseRequestHandler):
    def handle(self):
        proxy = self.server.proxy
        client = self.request
        client.settimeout(10)
        try:
            head = self._read_head(client)
        except OSError:
            return
        if head is None:
            return
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split()
        headers = {}
        for line in lines[1:]:
            key, sep, value = line.partition(":")
            if sep:
                headers[key.strip().lower()] = value.strip()
        record = {"time": time.time(), "request": lines[0][:200], "target": None,
                  "credentials": "proxy-authorization" in headers, "auth_ok": False,
                  "status": None}
        try:
            if len(parts) != 3 or parts[0].upper() != "CONNECT":
                return self._answer(client, record, 405, "Method Not Allowed")
            record["target"] = target = parts[1]
            record["auth_ok"] = self._auth_ok(headers.get("proxy-authorization"))
            if (record["credentials"] or proxy.require_auth) and not record["auth_ok"]:
                return self._answer(client, record, 407, "Proxy Authentication Required",
                                    'Proxy-Authenticate: Basic realm="test proxy"\r\n')
            host, sep, port = target.rpartition(":")
            host = host.strip("[]")
            if not sep or not port.isdigit():
                return self._answer(client, record, 400, "Bad Request")
            address = proxy.hosts.get(host.lower(), host)
            try:
                upstream = socket.create_connection((address, int(port)), timeout=5)
            except OSError as exc:
                record["error"] = str(exc)
                return self._answer(client, record, 502, "Bad Gateway")
            with upstream:
                self._answer(client, record, 200, "Connection established")
                self._relay(client, upstream)
        finally:
            with proxy.lock:
                if not any(r is record for r in proxy.records):
                    proxy.records.append(record)

    @staticmethod
    def _read_head(sock):
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                return None
            data += chunk
            if len(data) > 65536:
                return None
        # a client may not send anything before the 200: nothing is lost here
        return data.split(b"\r\n\r\n", 1)[0]

    def _auth_ok(self, value):
        proxy = self.server.proxy
        if not value:
            return False
        scheme, _, encoded = value.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return False
        return secrets.compare_digest(decoded, f"{proxy.username}:{proxy.password}")

    def _answer(self, client, record, status, reason, extra=""):
        record["status"] = status
        with self.server.proxy.lock:
            self.server.proxy.records.append(record)
        body = "" if status == 200 else f"{status} {reason}\n"
        length = "" if status == 200 else f"Content-Length: {len(body)}\r\nConnection: close\r\n"
        try:
            client.sendall(f"HTTP/1.1 {status} {reason}\r\n{extra}{length}\r\n{body}"
                           .encode("latin-1"))
        except OSError:
            pass

    @staticmethod
    def _relay(client, upstream):
        client.settimeout(None)
        upstream.settimeout(None)
        socks = [client, upstream]
        open_ends = {client: True, upstream: True}
        while any(open_ends.values()):
            readable, _, _ = select.select([s for s in socks if open_ends[s]], [], [], 120)
            if not readable:
                return  # idle for two minutes: give up
            for sock in readable:
                other = upstream if sock is client else client
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    open_ends[sock] = False
                    try:
                        other.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    continue
                try:
                    other.sendall(data)
                except OSError:
                    return


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64


class ConnectProxy:
    """A threaded CONNECT proxy on 127.0.0.1; start() / stop() or a context manager."""

    def __init__(self, hosts=None, username="robotproxy", password=None, require_auth=False):
        self.hosts = {k.lower(): v for k, v in (hosts or {}).items()}
        self.username = username
        self.password = password or "proxy-" + secrets.token_urlsafe(18)
        self.require_auth = require_auth
        self.lock = threading.Lock()
        self.records = []
        self.port = None
        self._server = self._thread = None

    @property
    def url(self):
        """http://127.0.0.1:PORT (no credentials)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def url_with_credentials(self):
        """http://USER:PASSWORD@127.0.0.1:PORT."""
        return f"http://{self.username}:{self.password}@127.0.0.1:{self.port}"

    def start(self):
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.proxy = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.2}, name="connect-proxy",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def connects(self):
        """The CONNECT requests (and refused other requests) so far, oldest first."""
        with self.lock:
            return [dict(r) for r in self.records]

    def reset(self):
        with self.lock:
            self.records = []
        self.require_auth = False


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--map", action="append", default=[], metavar="NAME=ADDR")
    parser.add_argument("--require-auth", action="store_true")
    opts = parser.parse_args(argv)
    hosts = dict(item.split("=", 1) for item in opts.map)
    with ConnectProxy(hosts, require_auth=opts.require_auth) as proxy:
        print(proxy.url_with_credentials if opts.require_auth else proxy.url, flush=True)
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

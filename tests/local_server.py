"""A throw-away HTTP server on 127.0.0.1 for the download tests, and a URL nothing listens on.

    with LocalServer({"good": data, "drop": data, "gone": 500}, name="x.tar") as server:
        server.url("good")            # http://127.0.0.1:<port>/good/x.tar -> data
        server.requests               # ["good", ...]: the kind of every request, in order

A URL path is /<kind>/<name>. bodies maps a kind to the bytes to send, or to an HTTP error status
(an int); bodies may also be a function (kind, name) -> the same. An unknown kind is a 404. The
kinds in dropped promise the whole body in Content-Length, send a third of it and close the
connection, as a server that goes away halfway does.
"""
import http.server
import posixpath
import socket
import threading


class LocalServer:
    def __init__(self, bodies, dropped=("drop",), name="file"):
        self.requests = []
        self.name = name  # the file name of url() when none is given
        answer = bodies if callable(bodies) else (lambda kind, name: bodies.get(kind, 404))
        requests = self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                kind, name = posixpath.split(self.path.strip("/"))
                requests.append(kind)
                body = answer(kind, name)
                if isinstance(body, int):
                    self.send_error(body)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if kind in dropped:
                    self.wfile.write(body[:len(body) // 3])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        self.base = "http://127.0.0.1:%d" % self._httpd.server_address[1]

    def url(self, kind, name=None):
        return "%s/%s/%s" % (self.base, kind, name or self.name)

    def close(self):
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def closed_port_url(name):
    """An http://127.0.0.1 URL of a port that was free a moment ago: nothing answers there."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return "http://127.0.0.1:%d/%s" % (port, name)

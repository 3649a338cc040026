"""TOP's HTTP endpoint: POST /top with the function document, answers the three most
frequent words of input.text. Standard library only; listens on 127.0.0.1:8765 (or the
address in TOP_LISTEN, host:port)."""
import collections
import json
import os
import re
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Top(BaseHTTPRequestHandler):
    def do_POST(self):
        if self.path != "/top":
            return self.answer(404, {"error": f"no function at {self.path}"})
        length = int(self.headers.get("content-length", 0))
        doc = json.loads(self.rfile.read(length) or b"{}")
        text = (doc.get("input") or {}).get("text", "")
        words = re.findall(r"[\w']+", str(text).lower())
        top = collections.Counter(words).most_common(3)
        self.answer(200, {"top": [{"word": w, "count": n} for w, n in top]})

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    host, port = os.environ.get("TOP_LISTEN", "127.0.0.1:8765").rsplit(":", 1)
    ThreadingHTTPServer((host, int(port)), Top).serve_forever()

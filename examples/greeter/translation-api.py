#!/usr/bin/env python3
"""A stand-in translation API for step 4: GET /translate?locale=L&text=T
answers T translated word by word (it knows a few more words than the local
translator). Listens on 127.0.0.1, port from argv (default 8081)."""
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlparse

WORDS = {
    "es-ES": {"Hello": "Hola", "World": "Mundo"},
    "de-DE": {"Hello": "Hallo", "World": "Welt"},
    "haw-US": {"Hello": "Aloha", "World": "Honua"},
}


class Translate(BaseHTTPRequestHandler):
    def do_GET(self):
        url = urlparse(self.path)
        query = parse_qs(url.query)
        text = query.get("text", [""])[0]
        for word, translated in WORDS.get(query.get("locale", [""])[0], {}).items():
            text = text.replace(word, translated)
        body = text.encode()
        self.send_response(200 if url.path == "/translate" else 404)
        self.send_header("content-type", "text/plain; charset=utf-8")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


port = int(sys.argv[1]) if len(sys.argv) > 1 else 8081
HTTPServer(("127.0.0.1", port), Translate).serve_forever()

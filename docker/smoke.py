#!/usr/bin/env python3
"""End-to-end smoke of a scaled deployment, through every edge: readiness, the nodes,
speech (OpenAI's /v1/audio/speech), transcription of that speech, a WebSocket
transcription stream and a WebSocket speech stream, and (given an upstream) a chat
completion. Python's standard library only, so it runs wherever the deployment does.

Environment: SMOKE_EDGES (comma-separated base URLs, default the compose file's two),
SCAIGRID_BOOTSTRAP_ADMIN_KEY (the deployment's admin key), SMOKE_NODES (nodes expected
online, default 2), and for chat SMOKE_CHAT_UPSTREAM (an OpenAI-compatible base URL)
with SMOKE_CHAT_KEY and SMOKE_CHAT_MODEL (the upstream's model).
"""

import base64
import io
import json
import os
import socket
import struct
import sys
import time
import urllib.error
import urllib.request
import uuid
import wave
from urllib.parse import urlparse

EDGES = os.environ.get("SMOKE_EDGES", "http://localhost:8080,http://localhost:8081").split(",")
KEY = os.environ.get("SCAIGRID_BOOTSTRAP_ADMIN_KEY") or sys.exit("set SCAIGRID_BOOTSTRAP_ADMIN_KEY")
NODES = int(os.environ.get("SMOKE_NODES", "2"))
SENTENCE = "The quick brown fox jumps over the lazy dog."


def request(edge, method, path, body=None, headers=None, raw=False):
    data = None
    headers = dict(headers or {})
    headers["Authorization"] = f"Bearer {KEY}"
    if body is not None and not isinstance(body, bytes):
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    elif body is not None:
        data = body
    req = urllib.request.Request(edge + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=120) as response:
            payload = response.read()
            return response.status, payload if raw else json.loads(payload or b"null")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


def check(condition, what):
    if not condition:
        sys.exit(f"FAILED: {what}")
    print(f"ok  {what}")


def wait(what, probe, seconds=180):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if probe():
                return check(True, what)
        except OSError:
            pass
        time.sleep(1)
    check(False, what)


class WebSocket:
    """A minimal RFC 6455 client: text and binary frames, masking, close."""

    def __init__(self, edge, path):
        url = urlparse(edge)
        self.sock = socket.create_connection((url.hostname, url.port or 80), timeout=120)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: {url.netloc}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {KEY}\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        if b" 101 " not in head.split(b"\r\n")[0]:
            sys.exit(f"FAILED: WebSocket {path}: {head.decode(errors='replace')}")

    def send(self, payload, opcode):
        mask = os.urandom(4)
        size = len(payload)
        if size < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
        elif size < 65536:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def send_json(self, value):
        self.send(json.dumps(value).encode(), 0x1)

    def exact(self, count):
        data = b""
        while len(data) < count:
            chunk = self.sock.recv(count - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    def recv(self):
        """(opcode, payload); a ping is answered and skipped."""
        while True:
            first, second = self.exact(2)
            size = second & 0x7F
            if size == 126:
                size = struct.unpack("!H", self.exact(2))[0]
            elif size == 127:
                size = struct.unpack("!Q", self.exact(8))[0]
            payload = self.exact(size)
            opcode = first & 0x0F
            if opcode == 0x9:
                self.send(payload, 0xA)
                continue
            return opcode, payload


def wav_pcm16(audio):
    with wave.open(io.BytesIO(audio)) as w:
        return w.getframerate(), w.readframes(w.getnframes())


def stream_transcription(edge, audio):
    ws = WebSocket(edge, "/v1/modules/scaiecho/stream/transcribe")
    ws.send_json({"type": "open", "media_type": "audio/wav", "language": "en"})
    opcode, ready = ws.recv()
    check(json.loads(ready)["type"] == "ready", f"{edge} transcription stream opens")
    for start in range(0, len(audio), 8192):
        ws.send(audio[start : start + 8192], 0x2)
    ws.send_json({"type": "close"})
    finals = []
    while True:
        opcode, payload = ws.recv()
        if opcode == 0x8:
            code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
            break
        frame = json.loads(payload)
        check(frame["type"] != "error", f"{edge} stream without errors ({frame})")
        if frame.get("is_final"):
            finals.append(frame["text"])
    text = " ".join(finals).lower()
    check(code == 1000 and "fox" in text, f"{edge} stream transcript: {text!r}")


def stream_speech(edge):
    ws = WebSocket(edge, "/v1/modules/scaispeak/stream/speak")
    ws.send_json({"type": "open"})
    opcode, ready = ws.recv()
    check(json.loads(ready)["type"] == "ready", f"{edge} speech stream opens")
    ws.send_json({"type": "text", "text": SENTENCE})
    ws.send_json({"type": "close"})
    audio, done = 0, False
    while True:
        opcode, payload = ws.recv()
        if opcode == 0x2:
            audio += len(payload)
        elif opcode == 0x1:
            frame = json.loads(payload)
            check(frame["type"] != "error", f"{edge} speech stream without errors ({frame})")
            done |= frame["type"] == "done"
        elif opcode == 0x8:
            break
    check(done and audio > 1000, f"{edge} speech stream: {audio} bytes of audio, done")


def multipart(fields, name, filename, content):
    boundary = uuid.uuid4().hex
    body = b""
    for key, value in fields.items():
        body += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'
        ).encode()
    body += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
        f'filename="{filename}"\r\nContent-Type: audio/wav\r\n\r\n'
    ).encode()
    body += content + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def chat(edges):
    upstream = os.environ.get("SMOKE_CHAT_UPSTREAM")
    if not upstream:
        print("SKIPPED chat: set SMOKE_CHAT_UPSTREAM (+ SMOKE_CHAT_KEY, SMOKE_CHAT_MODEL)")
        return
    suffix = uuid.uuid4().hex[:8]
    status, backend = request(
        edges[0],
        "POST",
        "/v1/backends",
        {
            "name": f"smoke-{suffix}",
            "kind": "openai",
            "base_url": upstream,
            "api_key": os.environ.get("SMOKE_CHAT_KEY", ""),
        },
    )
    check(status == 201, f"chat backend created ({status})")
    route = {"backend_id": backend["id"], "upstream_model": os.environ["SMOKE_CHAT_MODEL"]}
    slug = f"smoke/chat-{suffix}"
    status, _ = request(
        edges[0], "POST", "/v1/models", {"slug": slug, "routing": {"backends": [route]}}
    )
    check(status == 201, f"chat model {slug} created ({status})")
    for edge in edges:
        body = {"model": slug, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8}
        status, answer = request(edge, "POST", "/v1/chat/completions", body)
        check(status == 200 and answer["choices"], f"{edge} chat completion ({status})")


def main():
    for edge in EDGES:
        wait(f"{edge} ready", lambda: request(edge, "GET", "/health/ready")[0] == 200)

    def online():
        status, nodes = request(EDGES[0], "GET", "/v1/infra/nodes")
        live = [n for n in nodes["data"] if n["status"] == "online"] if status == 200 else []
        return len(live) >= NODES

    wait(f"{NODES} nodes online", online)
    for edge in EDGES:
        speech = {"model": "tts-1", "input": SENTENCE, "response_format": "wav"}
        status, audio = request(edge, "POST", "/v1/audio/speech", speech, raw=True)
        check(status == 200 and audio[:4] == b"RIFF", f"{edge} speech ({len(audio)} bytes)")
        body, headers = multipart({"model": "whisper-1"}, "file", "fox.wav", audio)
        status, text = request(edge, "POST", "/v1/audio/transcriptions", body, headers)
        heard = text.get("text", "").lower() if status == 200 else str(text)
        check(status == 200 and "fox" in heard, f"{edge} transcription: {heard!r}")
        stream_transcription(edge, audio)
        stream_speech(edge)
    chat(EDGES)
    print("smoke passed")


if __name__ == "__main__":
    main()

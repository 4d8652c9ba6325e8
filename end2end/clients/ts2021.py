"""Minimal ts2021 (controlbase Noise IK) *initiator*, written from shared/protocol/01.

Used only by the bad-input tests: it lets a raw TCP client get past the handshake so it can
then send oversized or undecryptable transport records, which is where a server's framing
code is most likely to misbehave. It is deliberately small and synchronous.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import socket
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

PROTOCOL_NAME = b"Noise_IK_25519_ChaChaPoly_BLAKE2s"
CAPABILITY_VERSION = 130  # tsnet 1.90.9, the client these tests run
MSG_INITIATION = 0x01
MSG_RESPONSE = 0x02
MSG_ERROR = 0x03
MSG_RECORD = 0x04
MAX_RECORD_CIPHERTEXT = 4093


class HandshakeError(Exception):
    """The server did not complete a well-formed handshake."""


def _pub_bytes(key: X25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _hkdf2(chaining_key: bytes, ikm: bytes) -> tuple[bytes, bytes]:
    temp = hmac.new(chaining_key, ikm, hashlib.blake2s).digest()
    out1 = hmac.new(temp, b"\x01", hashlib.blake2s).digest()
    out2 = hmac.new(temp, out1 + b"\x02", hashlib.blake2s).digest()
    return out1, out2


def _transport_nonce(counter: int) -> bytes:
    # controlbase uses a big-endian counter (01 §4), not Noise's little-endian one.
    return b"\x00" * 4 + struct.pack(">Q", counter)


class _Symmetric:
    def __init__(self) -> None:
        self.h = hashlib.blake2s(PROTOCOL_NAME).digest()
        self.ck = self.h
        self.k: bytes | None = None

    def mix_hash(self, data: bytes) -> None:
        self.h = hashlib.blake2s(self.h + data).digest()

    def mix_key(self, ikm: bytes) -> None:
        self.ck, self.k = _hkdf2(self.ck, ikm)

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        assert self.k is not None
        ct = ChaCha20Poly1305(self.k).encrypt(b"\x00" * 12, plaintext, self.h)
        self.mix_hash(ct)
        return ct

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        assert self.k is not None
        pt = ChaCha20Poly1305(self.k).decrypt(b"\x00" * 12, ciphertext, self.h)
        self.mix_hash(ciphertext)
        return pt

    def split(self) -> tuple[bytes, bytes]:
        return _hkdf2(self.ck, b"")


@dataclass
class Initiation:
    message: bytes  # the 101-byte initiation, to go base64 in X-Tailscale-Handshake
    state: _Symmetric
    ephemeral: X25519PrivateKey
    machine: X25519PrivateKey


def build_initiation(server_pub: bytes, machine: X25519PrivateKey | None = None,
                     version: int = CAPABILITY_VERSION) -> Initiation:
    machine = machine or X25519PrivateKey.generate()
    ephemeral = X25519PrivateKey.generate()
    st = _Symmetric()
    st.mix_hash(b"Tailscale Control Protocol v%d" % version)
    st.mix_hash(server_pub)
    e_pub = _pub_bytes(ephemeral.public_key())
    st.mix_hash(e_pub)
    server_key = X25519PublicKey.from_public_bytes(server_pub)
    st.mix_key(ephemeral.exchange(server_key))  # es
    enc_machine = st.encrypt_and_hash(_pub_bytes(machine.public_key()))  # s
    st.mix_key(machine.exchange(server_key))  # ss
    tag = st.encrypt_and_hash(b"")
    payload = e_pub + enc_machine + tag
    header = struct.pack(">HBH", version, MSG_INITIATION, len(payload))
    return Initiation(header + payload, st, ephemeral, machine)


def upgrade_request(host: str, initiation: bytes | str) -> bytes:
    """HTTP/1.1 upgrade request as tsnet sends it (01 §2.1)."""
    if isinstance(initiation, bytes):
        initiation = base64.b64encode(initiation).decode()
    return (
        "POST /ts2021 HTTP/1.1\r\n"
        f"Host: {host}\r\n"
        "User-Agent: Go-http-client/1.1\r\n"
        "Content-Length: 0\r\n"
        "Connection: upgrade\r\n"
        "Upgrade: tailscale-control-protocol\r\n"
        f"X-Tailscale-Handshake: {initiation}\r\n\r\n"
    ).encode()


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise HandshakeError(f"connection closed after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


def read_http_head(sock: socket.socket, limit: int = 16384) -> tuple[bytes, bytes]:
    """Read up to the end of an HTTP response head; return (head, bytes read past it)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            raise HandshakeError(f"connection closed before end of HTTP head: {buf[:200]!r}")
        buf += chunk
        if len(buf) > limit:
            raise HandshakeError("HTTP response head too long")
    head, rest = buf.split(b"\r\n\r\n", 1)
    return head, rest


class NoiseSession:
    """An established ts2021 connection (client side)."""

    def __init__(self, sock: socket.socket, send_key: bytes, recv_key: bytes, pending: bytes):
        self.sock = sock
        self._send = ChaCha20Poly1305(send_key)
        self._recv = ChaCha20Poly1305(recv_key)
        self._send_n = 0
        self._recv_n = 0
        self._pending = pending  # bytes already read from the socket past the handshake

    def _read(self, n: int) -> bytes:
        out = self._pending[:n]
        self._pending = self._pending[n:]
        if len(out) < n:
            out += recv_exact(self.sock, n - len(out))
        return out

    def read_record(self) -> bytes:
        typ, length = struct.unpack(">BH", self._read(3))
        if typ != MSG_RECORD:
            raise HandshakeError(f"unexpected record type {typ:#x}")
        ct = self._read(length)
        pt = self._recv.decrypt(_transport_nonce(self._recv_n), ct, None)
        self._recv_n += 1
        return pt

    def seal_record(self, plaintext: bytes) -> bytes:
        ct = self._send.encrypt(_transport_nonce(self._send_n), plaintext, None)
        self._send_n += 1
        return struct.pack(">BH", MSG_RECORD, len(ct)) + ct


def handshake(sock: socket.socket, host: str, server_pub: bytes) -> NoiseSession:
    """Perform the full ts2021 upgrade + Noise IK handshake on a connected socket."""
    init = build_initiation(server_pub)
    sock.sendall(upgrade_request(host, init.message))
    head, rest = read_http_head(sock)
    status_line = head.split(b"\r\n", 1)[0]
    if b" 101 " not in status_line + b" ":
        raise HandshakeError(f"expected 101 Switching Protocols, got {status_line!r}")
    headers = {
        k.strip().lower(): v.strip()
        for k, _, v in (line.partition(b":") for line in head.split(b"\r\n")[1:])
    }
    if headers.get(b"upgrade") != b"tailscale-control-protocol":
        raise HandshakeError(f"bad Upgrade header in 101: {headers.get(b'upgrade')!r}")
    need = 51 - len(rest)
    if need > 0:
        rest += recv_exact(sock, need)
    resp, pending = rest[:51], rest[51:]
    typ, length = struct.unpack(">BH", resp[:3])
    if typ == MSG_ERROR:
        raise HandshakeError(f"server error message: {resp[3:]!r}")
    if typ != MSG_RESPONSE or length != 48:
        raise HandshakeError(f"bad response header type={typ:#x} len={length}")
    st = init.state
    re_pub = resp[3:35]
    st.mix_hash(re_pub)
    re_key = X25519PublicKey.from_public_bytes(re_pub)
    st.mix_key(init.ephemeral.exchange(re_key))  # ee
    st.mix_key(init.machine.exchange(re_key))  # se
    try:
        st.decrypt_and_hash(resp[35:51])
    except Exception as exc:  # cryptography raises InvalidTag
        raise HandshakeError(f"response tag did not verify: {exc!r}") from exc
    k1, k2 = st.split()
    return NoiseSession(sock, send_key=k1, recv_key=k2, pending=pending)


def parse_server_key(key_json: dict) -> bytes:
    text = key_json.get("publicKey", "")
    if not text.startswith("mkey:") or len(text) != 5 + 64:
        raise HandshakeError(f"bad publicKey in /key response: {text!r}")
    return bytes.fromhex(text[5:])


def random_initiation(version: int = CAPABILITY_VERSION) -> bytes:
    """Structurally valid 101-byte initiation whose crypto is garbage."""
    return struct.pack(">HBH", version, MSG_INITIATION, 96) + os.urandom(96)

#!/usr/bin/env python3
"""Independent ts2021 (controlbase) reference, written from
/work/shared/protocol/01-ts2021-noise.md sections 3-4 with Python's `cryptography` and
hashlib (no Noise library). Prints a known-answer vector for src/handshake.rs's
`matches_independent_reference_vector` test: fixed static and ephemeral keys in, every
byte on the wire out."""

import hashlib
import hmac

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

VERSION = 130
MACHINE_PRIV = bytes(range(1, 33))
SERVER_PRIV = bytes(range(101, 133))
CLIENT_EPH = bytes(range(201, 233))
SERVER_EPH = bytes((i * 7 + 3) % 256 for i in range(32))


def pub(priv):
    return X25519PrivateKey.from_private_bytes(priv).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def dh(priv, peer):
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
    return X25519PrivateKey.from_private_bytes(priv).exchange(X25519PublicKey.from_public_bytes(peer))


def hmac_b2s(key, data):
    return hmac.new(key, data, hashlib.blake2s).digest()


def hkdf(ck, ikm):
    temp = hmac_b2s(ck, ikm)
    out1 = hmac_b2s(temp, b"\x01")
    out2 = hmac_b2s(temp, out1 + b"\x02")
    return out1, out2


class Symmetric:
    def __init__(self, prologue):
        name = b"Noise_IK_25519_ChaChaPoly_BLAKE2s"
        self.h = hashlib.blake2s(name).digest() if len(name) > 32 else name.ljust(32, b"\0")
        self.ck = self.h
        self.k = None
        self.mix_hash(prologue)

    def mix_hash(self, data):
        self.h = hashlib.blake2s(self.h + data).digest()

    def mix_key(self, ikm):
        self.ck, self.k = hkdf(self.ck, ikm)

    def encrypt_and_hash(self, pt):
        # Each key is used once: nonce is 12 zero bytes.
        ct = ChaCha20Poly1305(self.k).encrypt(bytes(12), pt, self.h)
        self.mix_hash(ct)
        return ct

    def split(self):
        return hkdf(self.ck, b"")


def record(key, n, pt):
    nonce = bytes(4) + n.to_bytes(8, "big")
    ct = ChaCha20Poly1305(key).encrypt(nonce, pt, b"")
    return bytes([0x04]) + len(ct).to_bytes(2, "big") + ct


def main():
    server_pub = pub(SERVER_PRIV)
    machine_pub = pub(MACHINE_PRIV)
    e_i = pub(CLIENT_EPH)
    e_r = pub(SERVER_EPH)

    st = Symmetric(b"Tailscale Control Protocol v%d" % VERSION)
    st.mix_hash(server_pub)                       # <- s
    st.mix_hash(e_i)                              # -> e
    st.mix_key(dh(CLIENT_EPH, server_pub))        # es
    enc_s = st.encrypt_and_hash(machine_pub)      # s
    st.mix_key(dh(MACHINE_PRIV, server_pub))      # ss
    tag1 = st.encrypt_and_hash(b"")
    init = VERSION.to_bytes(2, "big") + b"\x01" + (96).to_bytes(2, "big") + e_i + enc_s + tag1
    assert len(init) == 101

    st.mix_hash(e_r)                              # <- e
    st.mix_key(dh(CLIENT_EPH, e_r))               # ee
    st.mix_key(dh(MACHINE_PRIV, e_r))             # se
    tag2 = st.encrypt_and_hash(b"")
    resp = b"\x02" + (48).to_bytes(2, "big") + e_r + tag2
    assert len(resp) == 51

    k1, k2 = st.split()
    c2s = record(k1, 0, b"client record zero") + record(k1, 1, b"client record one")
    s2c = record(k2, 0, b"server record zero") + record(k2, 1, b"server record one")
    for name, value in [("server_pub", server_pub), ("machine_pub", machine_pub), ("initiation", init),
                        ("response", resp), ("client_to_server", c2s), ("server_to_client", s2c)]:
        print(f"{name} = {value.hex()}")


if __name__ == "__main__":
    main()

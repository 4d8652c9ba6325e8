//! controlbase transport records, sans-IO.
//!
//! A record is `0x04`, u16 BE ciphertext length, then ChaCha20-Poly1305 ciphertext (empty
//! AD). The nonce is 4 zero bytes and a big-endian u64 counter per direction — not the
//! Noise spec's little-endian one, which agrees only for the first record.
//!
//! The AEAD is ring's: its assembly ChaCha20-Poly1305 sealed 4 KB records about 2.5× as fast
//! as the portable RustCrypto one on the benchmark machine, and record sealing is the largest
//! single cost of sending full maps to thousands of nodes (BENCHMARKS.md). The tests check it
//! against RustCrypto's independent implementation.

use bytes::{Buf, BufMut, BytesMut};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};

use crate::handshake::HEADER_LEN;

/// Type byte of a transport record.
pub const MSG_RECORD: u8 = 0x04;
/// Largest record on the wire, header included.
pub const MAX_RECORD_LEN: usize = 4096;
/// Largest ciphertext in one record.
pub const MAX_CIPHERTEXT_LEN: usize = MAX_RECORD_LEN - HEADER_LEN;
const TAG_LEN: usize = 16;
/// Largest plaintext in one record.
pub const MAX_PLAINTEXT_LEN: usize = MAX_CIPHERTEXT_LEN - TAG_LEN;

/// A fatal transport error: the connection must be dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("unexpected Noise message type {got:#04x} after the handshake")]
    BadType { got: u8 },
    #[error("Noise record of {len} ciphertext bytes exceeds the maximum {MAX_CIPHERTEXT_LEN}")]
    Oversized { len: usize },
    #[error("Noise record of {len} ciphertext bytes is shorter than its tag")]
    Undersized { len: usize },
    #[error("Noise record {nonce} failed authentication")]
    AuthFailed { nonce: u64 },
    #[error("Noise nonce space exhausted")]
    NonceExhausted,
    #[error("stream ended inside a Noise record ({buffered} bytes buffered)")]
    Truncated { buffered: usize },
}

/// The 12-byte AEAD nonce for counter `n`: 4 zero bytes, then `n` big-endian.
pub fn nonce_bytes(n: u64) -> [u8; 12] {
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&n.to_be_bytes());
    nonce
}

/// One direction's key and counter. Counter `u64::MAX` is never used.
struct CipherState {
    cipher: LessSafeKey,
    nonce: u64,
}

impl CipherState {
    fn new(key: [u8; 32]) -> Self {
        let key = UnboundKey::new(&CHACHA20_POLY1305, &key).expect("ChaCha20 keys are 32 bytes");
        Self {
            cipher: LessSafeKey::new(key),
            nonce: 0,
        }
    }

    fn next_nonce(&mut self) -> Result<u64, RecordError> {
        if self.nonce == u64::MAX {
            return Err(RecordError::NonceExhausted);
        }
        let n = self.nonce;
        self.nonce += 1;
        Ok(n)
    }
}

/// The sending half: turns plaintext into records.
pub struct Encryptor {
    state: CipherState,
}

impl Encryptor {
    /// Appends `plaintext` to `out` as records of at most [`MAX_PLAINTEXT_LEN`] bytes each.
    /// An empty plaintext writes nothing.
    pub fn encrypt(&mut self, plaintext: &[u8], out: &mut BytesMut) -> Result<(), RecordError> {
        let records = plaintext.len().div_ceil(MAX_PLAINTEXT_LEN) as u64;
        // Refuse up front rather than leave a half-written batch in `out`.
        if u64::MAX - self.state.nonce < records {
            return Err(RecordError::NonceExhausted);
        }
        out.reserve(plaintext.len() + records as usize * (HEADER_LEN + TAG_LEN));
        for chunk in plaintext.chunks(MAX_PLAINTEXT_LEN) {
            self.encrypt_record(chunk, out)?;
        }
        Ok(())
    }

    /// Appends exactly one record (possibly empty) holding `plaintext`.
    ///
    /// # Panics
    /// If `plaintext` is longer than [`MAX_PLAINTEXT_LEN`]; that is a caller bug.
    pub fn encrypt_record(
        &mut self,
        plaintext: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), RecordError> {
        assert!(
            plaintext.len() <= MAX_PLAINTEXT_LEN,
            "record plaintext too long"
        );
        let start = out.len();
        out.put_bytes(0, HEADER_LEN);
        out.extend_from_slice(plaintext);
        self.seal(out, start).inspect_err(|_| out.truncate(start))
    }

    /// Seals an open record in place: `out[start..start + 3]` is a placeholder for the
    /// header and the rest of `out` is the record's plaintext. Writes the header, encrypts,
    /// and appends the tag. This lets a writer gather plaintext where the ciphertext will
    /// live, with no extra copy.
    ///
    /// # Panics
    /// If the plaintext is longer than [`MAX_PLAINTEXT_LEN`] or `start + 3 > out.len()`.
    pub fn seal(&mut self, out: &mut BytesMut, start: usize) -> Result<(), RecordError> {
        let plaintext_len = out.len() - start - HEADER_LEN;
        assert!(
            plaintext_len <= MAX_PLAINTEXT_LEN,
            "record plaintext too long"
        );
        let n = self.state.next_nonce()?;
        out[start] = MSG_RECORD;
        out[start + 1..start + HEADER_LEN]
            .copy_from_slice(&((plaintext_len + TAG_LEN) as u16).to_be_bytes());
        let tag = self
            .state
            .cipher
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce_bytes(n)),
                Aad::empty(),
                &mut out[start + HEADER_LEN..],
            )
            // Only fails for inputs beyond ChaCha20's 256 GiB limit.
            .expect("record fits ChaCha20-Poly1305 limits");
        out.extend_from_slice(tag.as_ref());
        Ok(())
    }

    /// Records sent so far (the next nonce).
    pub fn nonce(&self) -> u64 {
        self.state.nonce
    }
}

/// The receiving half: a streaming decoder fed arbitrary chunks of the byte stream.
pub struct Decoder {
    state: CipherState,
    buf: BytesMut,
    failed: Option<RecordError>,
}

impl Decoder {
    /// Appends received bytes.
    pub fn feed(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The receive buffer, for reading from a socket straight into it.
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Bytes received but not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Decrypts the next complete record in place and returns its plaintext, `Ok(None)` if
    /// more bytes are needed. Errors are sticky: after one, every call returns it again.
    pub fn next_record(&mut self) -> Result<Option<BytesMut>, RecordError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let result = self.decode();
        if let Err(err) = &result {
            self.failed = Some(err.clone());
            self.buf.clear();
        }
        result
    }

    fn decode(&mut self) -> Result<Option<BytesMut>, RecordError> {
        // Judge the header as soon as it is here: an oversized length must not make us wait
        // for (and buffer) bytes we would refuse anyway.
        if self.buf.is_empty() {
            return Ok(None);
        }
        if self.buf[0] != MSG_RECORD {
            return Err(RecordError::BadType { got: self.buf[0] });
        }
        if self.buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let len = usize::from(u16::from_be_bytes([self.buf[1], self.buf[2]]));
        if len > MAX_CIPHERTEXT_LEN {
            return Err(RecordError::Oversized { len });
        }
        if len < TAG_LEN {
            return Err(RecordError::Undersized { len });
        }
        if self.buf.len() < HEADER_LEN + len {
            return Ok(None);
        }
        let n = self.state.next_nonce()?;
        let mut record = self.buf.split_to(HEADER_LEN + len);
        record.advance(HEADER_LEN);
        self.state
            .cipher
            .open_in_place(
                Nonce::assume_unique_for_key(nonce_bytes(n)),
                Aad::empty(),
                &mut record,
            )
            .map_err(|_| RecordError::AuthFailed { nonce: n })?;
        record.truncate(len - TAG_LEN);
        Ok(Some(record))
    }

    /// Call at end of stream: an incomplete record left over is an error.
    pub fn finish(&self) -> Result<(), RecordError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        match self.buf.len() {
            0 => Ok(()),
            buffered => Err(RecordError::Truncated { buffered }),
        }
    }
}

/// Both directions of an established session.
pub struct Transport {
    encryptor: Encryptor,
    decoder: Decoder,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("sent", &self.encryptor.state.nonce)
            .field("received", &self.decoder.state.nonce)
            .finish()
    }
}

impl Transport {
    /// A session that encrypts with `send_key` and decrypts with `recv_key`.
    pub fn new(send_key: [u8; 32], recv_key: [u8; 32]) -> Self {
        Self {
            encryptor: Encryptor {
                state: CipherState::new(send_key),
            },
            decoder: Decoder {
                state: CipherState::new(recv_key),
                buf: BytesMut::new(),
                failed: None,
            },
        }
    }

    /// See [`Encryptor::encrypt`].
    pub fn encrypt(&mut self, plaintext: &[u8], out: &mut BytesMut) -> Result<(), RecordError> {
        self.encryptor.encrypt(plaintext, out)
    }

    pub fn encryptor_mut(&mut self) -> &mut Encryptor {
        &mut self.encryptor
    }

    pub fn decoder_mut(&mut self) -> &mut Decoder {
        &mut self.decoder
    }

    pub fn into_parts(self) -> (Encryptor, Decoder) {
        (self.encryptor, self.decoder)
    }

    #[cfg(test)]
    pub(crate) fn set_nonces_for_test(&mut self, send: u64, recv: u64) {
        self.encryptor.state.nonce = send;
        self.decoder.state.nonce = recv;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    // An independent ChaCha20-Poly1305 (RustCrypto, which snow also uses) to check ring's
    // records against.
    use chacha20poly1305::aead::{AeadInPlace, KeyInit};
    use chacha20poly1305::{ChaCha20Poly1305, Key, Tag};

    fn reference_nonce(bytes: &[u8; 12]) -> &chacha20poly1305::Nonce {
        chacha20poly1305::Nonce::from_slice(bytes)
    }

    const KEY_A: [u8; 32] = [7; 32];
    const KEY_B: [u8; 32] = [9; 32];

    /// (sender, receiver) sharing the A→B key.
    fn pair() -> (Transport, Transport) {
        (Transport::new(KEY_A, KEY_B), Transport::new(KEY_B, KEY_A))
    }

    fn decode_all(rx: &mut Transport) -> Result<Vec<u8>, RecordError> {
        let mut out = Vec::new();
        while let Some(p) = rx.decoder_mut().next_record()? {
            out.extend_from_slice(&p);
        }
        Ok(out)
    }

    #[test]
    fn second_record_uses_big_endian_nonce_one() {
        let (mut tx, _) = pair();
        let mut wire = BytesMut::new();
        tx.encrypt(b"first", &mut wire).unwrap();
        let first_len = wire.len();
        tx.encrypt(b"second", &mut wire).unwrap();
        let second = &wire[first_len..];
        assert_eq!(&second[..3], &[MSG_RECORD, 0x00, (6 + TAG_LEN) as u8]);

        let cipher = ChaCha20Poly1305::new(Key::from_slice(&KEY_A));
        let be: [u8; 12] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(nonce_bytes(1), be);
        let mut body = second[3..3 + 6].to_vec();
        let tag = Tag::clone_from_slice(&second[3 + 6..]);
        cipher
            .decrypt_in_place_detached(reference_nonce(&be), &[], &mut body, &tag)
            .unwrap();
        assert_eq!(body, b"second");

        // The Noise spec's little-endian nonce does not open it.
        let le: [u8; 12] = [0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0];
        let mut body = second[3..3 + 6].to_vec();
        assert!(
            cipher
                .decrypt_in_place_detached(reference_nonce(&le), &[], &mut body, &tag)
                .is_err()
        );
    }

    #[test]
    fn records_agree_with_an_independent_implementation_both_ways() {
        let reference = ChaCha20Poly1305::new(Key::from_slice(&KEY_A));
        let (mut tx, mut peer) = pair();
        // Past the first record, where little- and big-endian nonces differ; sizes around the
        // 64-byte ChaCha20 block and the 256-byte mark, up to a full record.
        tx.set_nonces_for_test(0x0102_0304_0506, 0);
        peer.set_nonces_for_test(0, 0x0102_0304_0506);
        for (i, len) in [0, 1, 63, 64, 65, 255, 256, 257, 1000, MAX_PLAINTEXT_LEN]
            .into_iter()
            .enumerate()
        {
            let plain: Vec<u8> = (0..len).map(|b| (b * 7 + i) as u8).collect();
            let n = 0x0102_0304_0506 + i as u64;

            // ring seals, RustCrypto opens.
            let mut wire = BytesMut::new();
            tx.encryptor_mut()
                .encrypt_record(&plain, &mut wire)
                .unwrap();
            let mut body = wire[HEADER_LEN..HEADER_LEN + len].to_vec();
            let tag = Tag::clone_from_slice(&wire[HEADER_LEN + len..]);
            reference
                .decrypt_in_place_detached(reference_nonce(&nonce_bytes(n)), &[], &mut body, &tag)
                .unwrap_or_else(|_| panic!("reference rejects a {len}-byte record"));
            assert_eq!(body, plain);

            // RustCrypto seals, ring opens.
            let mut body = plain.clone();
            let tag = reference
                .encrypt_in_place_detached(reference_nonce(&nonce_bytes(n)), &[], &mut body)
                .unwrap();
            let mut wire = BytesMut::new();
            wire.put_u8(MSG_RECORD);
            wire.put_u16((len + TAG_LEN) as u16);
            wire.extend_from_slice(&body);
            wire.extend_from_slice(&tag);
            peer.decoder_mut().feed(&wire);
            let got = peer.decoder_mut().next_record().unwrap().unwrap();
            assert_eq!(&got[..], &plain[..], "{len}-byte record");
        }
    }

    #[test]
    fn large_writes_split_and_stream_back_byte_by_byte() {
        let (mut tx, mut rx) = pair();
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let mut wire = BytesMut::new();
        tx.encrypt(&data, &mut wire).unwrap();
        // 4077 + 4077 + 1846 plaintext bytes.
        assert_eq!(wire.len(), data.len() + 3 * (HEADER_LEN + TAG_LEN));
        assert_eq!(&wire[..3], &[MSG_RECORD, 0x0f, 0xfd]);
        assert_eq!(tx.encryptor_mut().nonce(), 3);

        let mut got = Vec::new();
        for byte in wire.iter() {
            rx.decoder_mut().feed(&[*byte]);
            while let Some(p) = rx.decoder_mut().next_record().unwrap() {
                got.extend_from_slice(&p);
            }
        }
        assert_eq!(got, data);
        rx.decoder_mut().finish().unwrap();
    }

    #[test]
    fn empty_records_decode_to_nothing() {
        let (mut tx, mut rx) = pair();
        let mut wire = BytesMut::new();
        tx.encrypt(b"", &mut wire).unwrap();
        assert!(wire.is_empty(), "an empty write emits no record");
        tx.encryptor_mut().encrypt_record(b"", &mut wire).unwrap();
        tx.encrypt(b"after", &mut wire).unwrap();
        rx.decoder_mut().feed(&wire);
        assert_eq!(rx.decoder_mut().next_record().unwrap().unwrap().len(), 0);
        assert_eq!(
            &rx.decoder_mut().next_record().unwrap().unwrap()[..],
            b"after"
        );
    }

    #[test]
    fn oversized_record_is_refused_from_its_header() {
        let (_, mut rx) = pair();
        rx.decoder_mut().feed(&[MSG_RECORD, 0x0f, 0xfe]); // 4094
        assert_eq!(
            rx.decoder_mut().next_record(),
            Err(RecordError::Oversized { len: 4094 })
        );
        // Sticky.
        rx.decoder_mut().feed(&[0; 10]);
        assert_eq!(
            rx.decoder_mut().next_record(),
            Err(RecordError::Oversized { len: 4094 })
        );
        assert_eq!(
            rx.decoder_mut().finish(),
            Err(RecordError::Oversized { len: 4094 })
        );
    }

    #[test]
    fn maximum_record_is_accepted() {
        let (mut tx, mut rx) = pair();
        let mut wire = BytesMut::new();
        tx.encrypt(&[0x55; MAX_PLAINTEXT_LEN], &mut wire).unwrap();
        assert_eq!(wire.len(), MAX_RECORD_LEN);
        rx.decoder_mut().feed(&wire);
        assert_eq!(
            rx.decoder_mut().next_record().unwrap().unwrap().len(),
            MAX_PLAINTEXT_LEN
        );
    }

    #[test]
    fn bad_type_byte_is_refused() {
        let (_, mut rx) = pair();
        rx.decoder_mut().feed(b"GET / HTTP/1.1\r\n");
        assert_eq!(
            rx.decoder_mut().next_record(),
            Err(RecordError::BadType { got: b'G' })
        );
    }

    #[test]
    fn record_shorter_than_tag_is_refused() {
        let (_, mut rx) = pair();
        rx.decoder_mut().feed(&[MSG_RECORD, 0, 15]);
        assert_eq!(
            rx.decoder_mut().next_record(),
            Err(RecordError::Undersized { len: 15 })
        );
    }

    #[test]
    fn tampered_record_fails_authentication() {
        let (mut tx, mut rx) = pair();
        let mut wire = BytesMut::new();
        tx.encrypt(b"one", &mut wire).unwrap();
        tx.encrypt(b"two", &mut wire).unwrap();
        let last = wire.len() - 1;
        wire[last] ^= 1;
        rx.decoder_mut().feed(&wire);
        assert_eq!(
            &rx.decoder_mut().next_record().unwrap().unwrap()[..],
            b"one"
        );
        assert_eq!(
            rx.decoder_mut().next_record(),
            Err(RecordError::AuthFailed { nonce: 1 })
        );
    }

    #[test]
    fn records_out_of_order_fail_authentication() {
        let (mut tx, mut rx) = pair();
        let (mut a, mut b) = (BytesMut::new(), BytesMut::new());
        tx.encrypt(b"one", &mut a).unwrap();
        tx.encrypt(b"two", &mut b).unwrap();
        rx.decoder_mut().feed(&b);
        assert_eq!(
            rx.decoder_mut().next_record(),
            Err(RecordError::AuthFailed { nonce: 0 })
        );
    }

    #[test]
    fn truncated_record_is_reported_at_end_of_stream() {
        let (mut tx, mut rx) = pair();
        let mut wire = BytesMut::new();
        tx.encrypt(b"whole", &mut wire).unwrap();
        tx.encrypt(b"cut short", &mut wire).unwrap();
        wire.truncate(wire.len() - 5);
        rx.decoder_mut().feed(&wire);
        assert_eq!(decode_all(&mut rx).unwrap(), b"whole");
        assert_eq!(
            rx.decoder_mut().finish(),
            Err(RecordError::Truncated {
                buffered: 3 + 9 + 16 - 5
            })
        );
    }

    #[test]
    fn nonce_exhaustion_is_fatal_both_ways() {
        let (mut tx, mut rx) = pair();
        tx.set_nonces_for_test(u64::MAX - 1, 0);
        let mut wire = BytesMut::new();
        tx.encrypt(b"last", &mut wire).unwrap();
        let before = wire.len();
        assert_eq!(
            tx.encrypt(b"one too many", &mut wire),
            Err(RecordError::NonceExhausted)
        );
        assert_eq!(wire.len(), before, "nothing written on refusal");
        // A batch that would cross the limit is refused whole.
        let (mut tx2, _) = pair();
        tx2.set_nonces_for_test(u64::MAX - 2, 0);
        let mut wire2 = BytesMut::new();
        assert_eq!(
            tx2.encrypt(&[0; 3 * MAX_PLAINTEXT_LEN], &mut wire2),
            Err(RecordError::NonceExhausted)
        );
        assert!(wire2.is_empty());

        rx.set_nonces_for_test(0, u64::MAX - 1);
        rx.decoder_mut().feed(&wire);
        assert_eq!(
            &rx.decoder_mut().next_record().unwrap().unwrap()[..],
            b"last"
        );
        let mut more = BytesMut::new();
        let mut tx3 = Transport::new(KEY_A, KEY_B);
        tx3.encrypt(b"x", &mut more).unwrap();
        rx.decoder_mut().feed(&more);
        assert_eq!(
            rx.decoder_mut().next_record(),
            Err(RecordError::NonceExhausted)
        );
    }
}

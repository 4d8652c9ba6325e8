//! The ts2021 transport record decoder (`record::Decoder`), fed in arbitrary chunks.
//!
//! Even first byte: the rest is bytes off the wire. Records come out no larger than the
//! protocol allows, nothing past one record is buffered, and errors are sticky. Odd first
//! byte: plaintext pieces are encrypted by the peer, one byte may be tampered with, and the
//! stream is fed back; the plaintext must come out whole, and tampering must be detected.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use oxiscale_fuzz::{RECORD_KEY_A, RECORD_KEY_B, chunks};
use oxiscale_noise::Transport;
use oxiscale_noise::record::{Decoder, MAX_PLAINTEXT_LEN, MAX_RECORD_LEN};

fuzz_target!(|data: &[u8]| {
    let [mode, n_sizes, rest @ ..] = data else {
        return;
    };
    let n_sizes = usize::from(*n_sizes % 8).min(rest.len());
    let (sizes, rest) = rest.split_at(n_sizes);
    if mode & 1 == 0 {
        wire(rest, sizes);
    } else {
        round_trip(rest, sizes);
    }
});

/// Drains the decoder; the delivered plaintext, and the error if one came.
fn drain(decoder: &mut Decoder, out: &mut Vec<u8>) -> Option<oxiscale_noise::RecordError> {
    loop {
        match decoder.next_record() {
            Ok(Some(record)) => {
                assert!(record.len() <= MAX_PLAINTEXT_LEN);
                out.extend_from_slice(&record);
            }
            Ok(None) => {
                // Whatever is buffered is part of one record still to come.
                assert!(decoder.buffered() < MAX_RECORD_LEN);
                return None;
            }
            Err(err) => {
                assert_eq!(decoder.next_record(), Err(err.clone()), "errors are sticky");
                assert_eq!(decoder.finish(), Err(err.clone()));
                return Some(err);
            }
        }
    }
}

fn wire(stream: &[u8], sizes: &[u8]) {
    let mut receiver = Transport::new(RECORD_KEY_A, RECORD_KEY_B);
    let decoder = receiver.decoder_mut();
    let mut plain = Vec::new();
    for chunk in chunks(stream, sizes) {
        decoder.feed(chunk);
        if drain(decoder, &mut plain).is_some() {
            return;
        }
    }
    let _ = decoder.finish();
}

fn round_trip(rest: &[u8], sizes: &[u8]) {
    let [pos_hi, pos_lo, xor, plaintext @ ..] = rest else {
        return;
    };
    let mut sender = Transport::new(RECORD_KEY_B, RECORD_KEY_A);
    let mut receiver = Transport::new(RECORD_KEY_A, RECORD_KEY_B);
    // Pieces split at 0xff become records of their own; an empty piece is an empty record.
    let mut wire = BytesMut::new();
    let mut sent = Vec::new();
    for piece in plaintext.split(|&b| b == 0xff) {
        if piece.is_empty() {
            sender
                .encryptor_mut()
                .encrypt_record(piece, &mut wire)
                .unwrap();
        } else {
            sender.encrypt(piece, &mut wire).unwrap();
        }
        sent.extend_from_slice(piece);
    }
    let tampered = *xor != 0 && !wire.is_empty();
    if tampered {
        let pos = usize::from(u16::from_be_bytes([*pos_hi, *pos_lo])) % wire.len();
        wire[pos] ^= xor;
    }

    let decoder = receiver.decoder_mut();
    let mut got = Vec::new();
    let mut error = None;
    for chunk in chunks(&wire, sizes) {
        decoder.feed(chunk);
        error = drain(decoder, &mut got);
        if error.is_some() {
            break;
        }
    }
    let error = error.or_else(|| decoder.finish().err());
    if tampered {
        assert!(error.is_some(), "a tampered stream decoded without error");
        assert!(
            sent.starts_with(&got),
            "tampering changed delivered plaintext"
        );
    } else {
        assert_eq!(error, None);
        assert_eq!(got, sent);
    }
}

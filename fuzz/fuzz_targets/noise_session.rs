//! A whole ts2021 handshake and session from a fuzzed client key and version: the
//! client's genuine initiation, tampered with as the input says, then the server's
//! `accept_initiation`. A tampered initiation must be refused and an untouched one accepted
//! with the client's key and version; the client must accept the server's response, and
//! each side's transport records must decrypt on the other to what was sent.
//!
//! Input: client private key (32), version (2, BE), (position, xor) pairs ended by a zero
//! position, then the payload exchanged both ways.
#![no_main]

use std::sync::OnceLock;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use oxiscale_noise::handshake::INITIATION_LEN;
use oxiscale_noise::{Initiator, StaticKey, Transport, accept_initiation};
use oxiscale_tailcfg::MachinePublic;

fn server() -> &'static (StaticKey, MachinePublic) {
    static SERVER: OnceLock<(StaticKey, MachinePublic)> = OnceLock::new();
    SERVER.get_or_init(|| {
        let key = oxiscale_fuzz::server_key();
        let public = key.public();
        (key, public)
    })
}

fuzz_target!(|data: &[u8]| genuine(data));

fn genuine(rest: &[u8]) {
    if rest.len() < 34 {
        return;
    }
    let (key, rest) = rest.split_at(32);
    let (version, rest) = rest.split_at(2);
    let client = StaticKey::from_bytes(key.try_into().unwrap());
    let version = u16::from_be_bytes([version[0], version[1]]);
    let (initiator, original) = Initiator::new(&client, &server().1, version).unwrap();

    // Tampering: (position, xor) pairs up to the first zero position byte; what follows
    // is the payload exchanged once the handshake is done.
    let mut msg = original;
    let mut rest = rest;
    while let [pos, xor, tail @ ..] = rest {
        if *pos == 0 {
            rest = tail;
            break;
        }
        msg[usize::from(*pos) % INITIATION_LEN] ^= xor;
        rest = tail;
    }
    let tampered = msg != original;

    match accept_initiation(&server().0, &msg, 0) {
        Ok(accepted) => {
            assert!(!tampered, "a tampered initiation was accepted");
            assert_eq!(accepted.machine, client.public());
            assert_eq!(accepted.version, version);
            let client_side = initiator
                .finish(&accepted.response)
                .expect("the client refused the server's response");
            exchange(client_side, accepted.transport, rest);
        }
        Err(err) => assert!(tampered, "a genuine initiation was refused: {err}"),
    }
}

/// Each side's records must decrypt on the other to what was sent.
fn exchange(mut client: Transport, mut server: Transport, payload: &[u8]) {
    one_way(&mut client, &mut server, payload);
    one_way(&mut server, &mut client, payload);
}

fn one_way(from: &mut Transport, to: &mut Transport, payload: &[u8]) {
    let mut wire = BytesMut::new();
    from.encrypt(payload, &mut wire).unwrap();
    let decoder = to.decoder_mut();
    decoder.feed(&wire);
    let mut got = Vec::new();
    while let Some(record) = decoder.next_record().unwrap() {
        got.extend_from_slice(&record);
    }
    assert_eq!(got, payload);
    decoder.finish().unwrap();
}

//! Waiting interactive logins: one per machine, a bounded number in all.

use super::*;
use oxiscale_tailcfg::RegisterRequest;

fn state() -> State {
    State::for_tests(false)
}

/// A registration with nothing vouching for it, from machine `m` (two bytes of key).
fn start(s: &mut State, m: u16, now: OffsetDateTime) -> RegisterOutcome {
    let mut key = [1u8; 32];
    key[..2].copy_from_slice(&m.to_be_bytes());
    let req = RegisterRequest {
        version: 130,
        node_key: NodePublic::from_bytes(key),
        ..Default::default()
    };
    s.register(
        &mut Effects::default(),
        MachinePublic::from_bytes(key),
        &req,
        now,
    )
    .unwrap()
}

#[test]
fn a_machine_that_starts_again_replaces_its_waiting_login() {
    let mut s = state();
    let now = OffsetDateTime::now_utc();
    let RegisterOutcome::NeedsLogin { auth_id: first, .. } = start(&mut s, 7, now) else {
        panic!("expected a login URL")
    };
    let RegisterOutcome::NeedsLogin {
        auth_id: second, ..
    } = start(&mut s, 7, now)
    else {
        panic!("expected a login URL")
    };
    assert!(s.pending_login(&first).is_none(), "the first is gone");
    assert!(s.pending_login(&second).is_some());
    assert_eq!(s.pending.len(), 1);
}

#[test]
fn waiting_logins_are_bounded_and_make_room_as_they_time_out() {
    let mut s = state();
    let now = OffsetDateTime::now_utc();
    for m in 0..MAX_PENDING_LOGINS as u16 {
        assert!(matches!(
            start(&mut s, m, now),
            RegisterOutcome::NeedsLogin { .. }
        ));
    }
    let refused = start(&mut s, u16::MAX, now);
    assert!(
        matches!(&refused, RegisterOutcome::Refused(r) if r.contains("too many")),
        "{refused:?}"
    );
    assert_eq!(s.pending.len(), MAX_PENDING_LOGINS);
    // Once the waiting ones time out, a new machine gets its login.
    let later = now + PENDING_LOGIN_TTL;
    assert!(matches!(
        start(&mut s, u16::MAX, later),
        RegisterOutcome::NeedsLogin { .. }
    ));
    assert_eq!(s.pending.len(), 1);
}

//! Leases: one holder at a time; renewing keeps the epoch, a takeover after expiry raises
//! it, giving up frees the lease at once — on both engines, and between two nodes sharing a
//! PostgreSQL database.

#[macro_use]
mod support;
use support::{Engine, Fixture};

use std::time::Duration;

use fleetmq_store::{LeaseClaim, LeaseStore, Timestamp};

fn claim(holder: &str, lifetime: Duration) -> LeaseClaim {
    LeaseClaim {
        name: "device-plane".to_owned(),
        holder: holder.to_owned(),
        lifetime,
        address: Some(format!("http://{holder}.example:8000")),
    }
}

fn one_holder_at_a_time_until_the_lease_expires(engine: Engine) {
    let fixture = Fixture::new(engine);
    let db = fixture.open();
    assert_eq!(db.lease("device-plane").unwrap(), None);

    let a = db
        .claim_lease(&claim("a", Duration::from_secs(60)))
        .unwrap()
        .expect("a free lease is taken");
    assert_eq!((a.holder.as_str(), a.epoch), ("a", 1));
    assert!(a.held_by("a", Timestamp::now()));
    assert_eq!(
        db.claim_lease(&claim("b", Duration::from_secs(60)))
            .unwrap(),
        None,
        "b may not take a held lease"
    );
    let renewed = db
        .claim_lease(&claim("a", Duration::from_secs(60)))
        .unwrap()
        .expect("the holder renews");
    assert_eq!(renewed.epoch, 1, "a renewal keeps the epoch");
    assert!(renewed.expires >= a.expires);

    // An expired lease goes to the next claimant, under a new epoch.
    db.claim_lease(&claim("a", Duration::ZERO)).unwrap();
    let b = db
        .claim_lease(&claim("b", Duration::from_secs(60)))
        .unwrap()
        .expect("an expired lease is taken over");
    assert_eq!((b.holder.as_str(), b.epoch), ("b", 2));
    assert_eq!(b.address.as_deref(), Some("http://b.example:8000"));
    assert_eq!(
        db.claim_lease(&claim("a", Duration::from_secs(60)))
            .unwrap(),
        None,
        "the old holder cannot renew a lease taken over"
    );

    // Giving up frees it at once; only its holder can.
    db.release_lease("device-plane", "a").unwrap();
    assert!(
        db.lease("device-plane")
            .unwrap()
            .unwrap()
            .held_by("b", Timestamp::now())
    );
    db.release_lease("device-plane", "b").unwrap();
    let c = db
        .claim_lease(&claim("c", Duration::from_secs(60)))
        .unwrap()
        .expect("a released lease is free");
    assert_eq!(c.epoch, 3);
}

fn a_lease_survives_a_restart(engine: Engine) {
    let fixture = Fixture::new(engine);
    let held = {
        let db = fixture.open();
        db.claim_lease(&claim("a", Duration::from_secs(60)))
            .unwrap()
            .expect("taken")
    };
    let db = fixture.open();
    assert_eq!(db.lease("device-plane").unwrap(), Some(held));
    assert_eq!(
        db.claim_lease(&claim("b", Duration::from_secs(60)))
            .unwrap(),
        None
    );
}

on_both_engines!(
    one_holder_at_a_time_until_the_lease_expires,
    a_lease_survives_a_restart,
);

#[test]
fn two_nodes_on_one_database_never_both_hold_the_lease() {
    let fixture = Fixture::new(Engine::Postgres);
    let nodes = [fixture.open(), fixture.open()];
    // Both claim over and over, at once; whoever holds it must be the only one.
    std::thread::scope(|scope| {
        let claims: Vec<_> = nodes
            .iter()
            .enumerate()
            .map(|(i, db)| {
                scope.spawn(move || {
                    let mut won = Vec::new();
                    for _ in 0..50 {
                        if let Some(lease) = db
                            .claim_lease(&claim(&format!("n{i}"), Duration::from_millis(5)))
                            .unwrap()
                        {
                            won.push(lease);
                        }
                    }
                    won
                })
            })
            .collect();
        let mut all: Vec<_> = claims
            .into_iter()
            .flat_map(|c| c.join().expect("no panic"))
            .collect();
        all.sort_by_key(|l| (l.epoch, l.expires));
        // Within one epoch one holder; a new epoch begins only after the last expiry of the
        // previous holder's claims.
        for pair in all.windows(2) {
            if pair[0].epoch == pair[1].epoch {
                assert_eq!(pair[0].holder, pair[1].holder, "{pair:?}");
            } else {
                assert_ne!(pair[0].holder, pair[1].holder, "{pair:?}");
                assert!(pair[1].epoch == pair[0].epoch + 1, "{pair:?}");
            }
        }
    });
}

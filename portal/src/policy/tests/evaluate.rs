//! `evaluate`: every deny reason, expiry rules, several policies.

use chrono::{TimeDelta, Weekday::*};
use chrono_tz::Europe::Berlin;

use super::*;

const NOW: &str = "2026-05-18T10:00:00Z"; // a Monday, 12:00 in Berlin

fn deny(s: &Snapshot, req: &AccessRequest) -> DenyReason {
    match evaluate(s, req) {
        Decision::Deny { reason } => reason,
        allow => panic!("expected deny, got {allow:?}"),
    }
}

fn allow(s: &Snapshot, req: &AccessRequest) -> (PolicyId, Option<DateTime<Utc>>) {
    match evaluate(s, req) {
        Decision::Allow {
            policy_id,
            expires_at,
        } => (policy_id, expires_at),
        deny => panic!("expected allow, got {deny:?}"),
    }
}

#[test]
fn default_is_deny() {
    let s = base_snapshot();
    assert_eq!(deny(&s, &alice_wants_wiki(utc(NOW))), DenyReason::NoPolicy);
}

#[test]
fn plain_policy_allows_members_only() {
    let mut s = base_snapshot();
    s.upsert_policy(policy(1, ENGINEERS, WIKI));
    let now = utc(NOW);
    assert_eq!(
        allow(&s, &alice_wants_wiki(now)),
        (PolicyId::from_u128(1), None)
    );
    // Service accounts are members like users.
    let robot = AccessRequest {
        actor: ROBOT,
        client: ROBOT_CLIENT,
        sign_in_method: SignInMethod::ServiceToken,
        ..alice_wants_wiki(now)
    };
    assert_eq!(allow(&s, &robot).0, PolicyId::from_u128(1));
    // Bob is in sales, and the policy is for the wiki only.
    let bob = AccessRequest {
        actor: BOB,
        client: BOB_PHONE,
        ..alice_wants_wiki(now)
    };
    assert_eq!(deny(&s, &bob), DenyReason::NoPolicy);
    let db = AccessRequest {
        resource: DB,
        ..alice_wants_wiki(now)
    };
    assert_eq!(deny(&s, &db), DenyReason::NoPolicy);
}

#[test]
fn expiry_is_the_token_expiry_without_schedule() {
    let mut s = base_snapshot();
    s.upsert_policy(policy(1, ENGINEERS, WIKI));
    let now = utc(NOW);
    let req = AccessRequest {
        token_expiry: Some(now + TimeDelta::hours(8)),
        ..alice_wants_wiki(now)
    };
    assert_eq!(allow(&s, &req).1, Some(now + TimeDelta::hours(8)));
}

#[test]
fn token_expiry_edges() {
    let mut s = base_snapshot();
    s.upsert_policy(policy(1, ENGINEERS, WIKI));
    let now = utc(NOW);
    let at = |expiry| AccessRequest {
        token_expiry: Some(expiry),
        ..alice_wants_wiki(now)
    };
    assert_eq!(deny(&s, &at(now)), DenyReason::TokenExpired);
    assert_eq!(
        deny(&s, &at(now - TimeDelta::seconds(1))),
        DenyReason::TokenExpired
    );
    assert_eq!(
        allow(&s, &at(now + TimeDelta::milliseconds(1))).1,
        Some(now + TimeDelta::milliseconds(1))
    );
}

#[test]
fn expiry_is_the_earlier_of_token_and_window_end() {
    let mut s = base_snapshot();
    let mut p = policy(1, ENGINEERS, WIKI);
    p.conditions.schedule = Some(schedule(Berlin, vec![window(&[Mon], "09:00", "17:00")]));
    s.upsert_policy(p);
    let now = utc(NOW);
    let window_end = local(Berlin, "2026-05-18 17:00:00");
    let with_token = |t| AccessRequest {
        token_expiry: t,
        ..alice_wants_wiki(now)
    };
    assert_eq!(allow(&s, &with_token(None)).1, Some(window_end));
    assert_eq!(
        allow(&s, &with_token(Some(window_end + TimeDelta::hours(1)))).1,
        Some(window_end)
    );
    let early = now + TimeDelta::minutes(5);
    assert_eq!(allow(&s, &with_token(Some(early))).1, Some(early));
}

#[test]
fn time_window_edges_through_evaluate() {
    let mut s = base_snapshot();
    let mut p = policy(1, ENGINEERS, WIKI);
    p.conditions.schedule = Some(schedule(Berlin, vec![window(&[Mon], "09:00", "17:00")]));
    s.upsert_policy(p);
    let start = local(Berlin, "2026-05-18 09:00:00");
    let end = local(Berlin, "2026-05-18 17:00:00");
    assert!(matches!(
        evaluate(&s, &alice_wants_wiki(start)),
        Decision::Allow { .. }
    ));
    let outside = DenyReason::OutsideTimeWindow {
        policy_id: PolicyId::from_u128(1),
    };
    assert_eq!(deny(&s, &alice_wants_wiki(end)), outside);
    assert_eq!(
        deny(&s, &alice_wants_wiki(start - TimeDelta::seconds(1))),
        outside
    );
}

#[test]
fn source_cidrs() {
    let mut s = base_snapshot();
    let mut p = policy(1, ENGINEERS, WIKI);
    p.conditions.source_cidrs = vec![
        "198.51.100.0/24".parse().unwrap(),
        "2001:db8::/32".parse().unwrap(),
    ];
    s.upsert_policy(p);
    let now = utc(NOW);
    let from = |ip: &str| AccessRequest {
        remote_ip: ip.parse().unwrap(),
        ..alice_wants_wiki(now)
    };
    let denied = DenyReason::SourceIpNotAllowed {
        policy_id: PolicyId::from_u128(1),
    };
    assert!(matches!(
        evaluate(&s, &from("198.51.100.255")),
        Decision::Allow { .. }
    ));
    assert!(matches!(
        evaluate(&s, &from("2001:db8::1")),
        Decision::Allow { .. }
    ));
    // An IPv4 peer seen on a dual-stack socket.
    assert!(matches!(
        evaluate(&s, &from("::ffff:198.51.100.9")),
        Decision::Allow { .. }
    ));
    assert_eq!(deny(&s, &from("198.51.101.1")), denied);
    assert_eq!(deny(&s, &from("2001:db9::1")), denied);
    assert_eq!(deny(&s, &from("::ffff:198.51.101.9")), denied);
}

#[test]
fn sign_in_methods() {
    let mut s = base_snapshot();
    let mut p = policy(1, ENGINEERS, WIKI);
    p.conditions.sign_in_methods = [SignInMethod::Oidc].into();
    s.upsert_policy(p);
    let now = utc(NOW);
    let via = |m| AccessRequest {
        sign_in_method: m,
        ..alice_wants_wiki(now)
    };
    assert!(matches!(
        evaluate(&s, &via(SignInMethod::Oidc)),
        Decision::Allow { .. }
    ));
    assert_eq!(
        deny(&s, &via(SignInMethod::Password)),
        DenyReason::SignInMethodNotAllowed {
            policy_id: PolicyId::from_u128(1)
        }
    );
}

#[test]
fn disabled_policy() {
    let mut s = base_snapshot();
    let mut p = policy(1, ENGINEERS, WIKI);
    p.enabled = false;
    s.upsert_policy(p.clone());
    let now = utc(NOW);
    assert_eq!(
        deny(&s, &alice_wants_wiki(now)),
        DenyReason::PolicyDisabled {
            policy_id: PolicyId::from_u128(1)
        }
    );
    p.enabled = true;
    s.upsert_policy(p);
    assert!(matches!(
        evaluate(&s, &alice_wants_wiki(now)),
        Decision::Allow { .. }
    ));
}

#[test]
fn unknown_and_disabled_subjects() {
    let mut s = base_snapshot();
    s.upsert_policy(policy(1, ENGINEERS, WIKI));
    let now = utc(NOW);
    let base = alice_wants_wiki(now);

    let gone = AccessRequest {
        resource: ResourceId::from_u128(999),
        ..base
    };
    assert_eq!(deny(&s, &gone), DenyReason::ResourceUnknown);

    let stranger = AccessRequest {
        actor: ActorId::User(UserId::from_u128(77)),
        ..base
    };
    assert_eq!(deny(&s, &stranger), DenyReason::ActorUnknown);

    let no_client = AccessRequest {
        client: ClientId::from_u128(999),
        ..base
    };
    assert_eq!(deny(&s, &no_client), DenyReason::ClientUnknown);

    let bobs_phone = AccessRequest {
        client: BOB_PHONE,
        ..base
    };
    assert_eq!(deny(&s, &bobs_phone), DenyReason::ClientNotOwned);

    let mut disabled_client = s.clone();
    disabled_client.upsert_client(Client {
        id: ALICE_LAPTOP,
        owner: ALICE,
        disabled: true,
    });
    assert_eq!(deny(&disabled_client, &base), DenyReason::ClientDisabled);

    let mut disabled_actor = s.clone();
    disabled_actor.upsert_actor(Actor {
        id: ALICE,
        disabled: true,
    });
    assert_eq!(deny(&disabled_actor, &base), DenyReason::ActorDisabled);

    let mut deleted_actor = s.clone();
    deleted_actor.remove_actor(ALICE);
    assert_eq!(deny(&deleted_actor, &base), DenyReason::ActorUnknown);
    assert!(
        deleted_actor.client(ALICE_LAPTOP).is_none(),
        "clients go with their owner"
    );

    let mut deleted_client = s.clone();
    deleted_client.remove_client(ALICE_LAPTOP);
    assert_eq!(deny(&deleted_client, &base), DenyReason::ClientUnknown);

    let mut deleted_resource = s;
    deleted_resource.remove_resource(WIKI);
    assert_eq!(deny(&deleted_resource, &base), DenyReason::ResourceUnknown);
}

#[test]
fn any_satisfied_policy_allows_and_latest_expiry_wins() {
    let mut s = base_snapshot();
    s.add_membership(ALICE, SALES);
    let mut disabled = policy(1, ENGINEERS, WIKI);
    disabled.enabled = false;
    let mut wrong_ip = policy(2, ENGINEERS, WIKI);
    wrong_ip.conditions.source_cidrs = vec!["10.0.0.0/8".parse().unwrap()];
    let mut until_five = policy(3, SALES, WIKI);
    until_five.conditions.schedule = Some(schedule(Berlin, vec![window(&[Mon], "09:00", "17:00")]));
    let mut until_eight = policy(4, ENGINEERS, WIKI);
    until_eight.conditions.schedule =
        Some(schedule(Berlin, vec![window(&[Mon], "11:00", "20:00")]));
    for p in [disabled, wrong_ip, until_five, until_eight.clone()] {
        s.upsert_policy(p);
    }
    let now = utc(NOW);
    assert_eq!(
        allow(&s, &alice_wants_wiki(now)),
        (
            PolicyId::from_u128(4),
            Some(local(Berlin, "2026-05-18 20:00:00"))
        )
    );
    // Before 11:00 only the 09:00–17:00 one holds.
    assert_eq!(
        allow(&s, &alice_wants_wiki(local(Berlin, "2026-05-18 10:00:00"))),
        (
            PolicyId::from_u128(3),
            Some(local(Berlin, "2026-05-18 17:00:00"))
        )
    );
    // An unconditional policy (no expiry) beats any window.
    s.upsert_policy(policy(5, SALES, WIKI));
    assert_eq!(
        allow(&s, &alice_wants_wiki(now)),
        (PolicyId::from_u128(5), None)
    );
    // ... but the token still caps it, and then the lowest id among equal
    // expiries wins.
    let capped = AccessRequest {
        token_expiry: Some(now + TimeDelta::minutes(1)),
        ..alice_wants_wiki(now)
    };
    assert_eq!(
        allow(&s, &capped),
        (PolicyId::from_u128(3), Some(now + TimeDelta::minutes(1)))
    );
}

#[test]
fn deny_names_the_first_enabled_policys_violation() {
    let mut s = base_snapshot();
    let mut disabled = policy(1, ENGINEERS, WIKI);
    disabled.enabled = false;
    let mut wrong_method = policy(2, ENGINEERS, WIKI);
    wrong_method.conditions.sign_in_methods = [SignInMethod::Oidc].into();
    let mut wrong_time = policy(3, ENGINEERS, WIKI);
    wrong_time.conditions.schedule = Some(schedule(Berlin, vec![window(&[Sun], "09:00", "17:00")]));
    for p in [disabled, wrong_method, wrong_time] {
        s.upsert_policy(p);
    }
    assert_eq!(
        deny(&s, &alice_wants_wiki(utc(NOW))),
        DenyReason::SignInMethodNotAllowed {
            policy_id: PolicyId::from_u128(2)
        }
    );
    s.remove_policy(PolicyId::from_u128(2));
    assert_eq!(
        deny(&s, &alice_wants_wiki(utc(NOW))),
        DenyReason::OutsideTimeWindow {
            policy_id: PolicyId::from_u128(3)
        }
    );
    let r = DenyReason::OutsideTimeWindow {
        policy_id: PolicyId::from_u128(3),
    };
    assert_eq!(r.code(), "outside_time_window");
    assert!(
        r.to_string()
            .contains("00000000-0000-0000-0000-000000000003")
    );
}

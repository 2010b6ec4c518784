//! Keeping the snapshot in step: cascades and the resource index.

use super::*;

#[test]
fn removing_a_membership_withdraws_access() {
    let mut s = base_snapshot();
    s.upsert_policy(policy(1, ENGINEERS, WIKI));
    let req = alice_wants_wiki(utc("2026-05-18T10:00:00Z"));
    assert!(matches!(evaluate(&s, &req), Decision::Allow { .. }));
    s.remove_membership(ALICE, ENGINEERS);
    assert_eq!(
        evaluate(&s, &req),
        Decision::Deny {
            reason: DenyReason::NoPolicy
        }
    );
    assert!(s.visible_resources(ALICE).is_empty());
}

#[test]
fn memberships_need_known_actor_and_group() {
    let mut s = base_snapshot();
    assert!(!s.add_membership(ActorId::User(UserId::from_u128(99)), ENGINEERS));
    assert!(!s.add_membership(ALICE, GroupId::from_u128(99)));
}

#[test]
fn removing_a_group_cascades() {
    let mut s = base_snapshot();
    s.upsert_policy(policy(1, ENGINEERS, WIKI));
    s.upsert_policy(policy(2, SALES, WIKI));
    s.remove_group(ENGINEERS);
    assert!(s.policy(PolicyId::from_u128(1)).is_none());
    assert!(s.policy(PolicyId::from_u128(2)).is_some());
    assert_eq!(s.groups_of(ALICE).count(), 0);
    // Re-creating a group of the same id does not bring members back.
    s.upsert_group(ENGINEERS);
    s.upsert_policy(policy(1, ENGINEERS, WIKI));
    assert!(matches!(
        evaluate(&s, &alice_wants_wiki(utc("2026-05-18T10:00:00Z"))),
        Decision::Deny {
            reason: DenyReason::NoPolicy
        }
    ));
}

#[test]
fn removing_a_resource_removes_its_policies() {
    let mut s = base_snapshot();
    s.upsert_policy(policy(1, ENGINEERS, WIKI));
    s.upsert_policy(policy(2, ENGINEERS, DB));
    s.remove_resource(WIKI);
    assert!(s.policy(PolicyId::from_u128(1)).is_none());
    assert_eq!(s.visible_resources(ALICE), [DB].into());
}

#[test]
fn moving_a_policy_to_another_resource_reindexes_it() {
    let mut s = base_snapshot();
    s.upsert_policy(policy(1, ENGINEERS, WIKI));
    s.upsert_policy(policy(1, ENGINEERS, DB));
    let now = utc("2026-05-18T10:00:00Z");
    assert_eq!(
        evaluate(&s, &alice_wants_wiki(now)),
        Decision::Deny {
            reason: DenyReason::NoPolicy
        }
    );
    let db = AccessRequest {
        resource: DB,
        ..alice_wants_wiki(now)
    };
    assert!(matches!(evaluate(&s, &db), Decision::Allow { .. }));
    assert_eq!(s.policies_for(ALICE, WIKI).count(), 0);
}

#[test]
fn visible_resources_ignore_disabled_policies_and_other_groups() {
    let mut s = base_snapshot();
    let mut p = policy(1, ENGINEERS, WIKI);
    p.enabled = false;
    s.upsert_policy(p);
    s.upsert_policy(policy(2, SALES, DB));
    assert!(s.visible_resources(ALICE).is_empty());
    assert_eq!(s.visible_resources(BOB), [DB].into());
    s.upsert_policy(policy(1, ENGINEERS, WIKI));
    assert_eq!(s.visible_resources(ALICE), [WIKI].into());
    assert_eq!(s.visible_resources(ROBOT), [WIKI].into());
}

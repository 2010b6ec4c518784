//! Policy-engine tests and their fixtures.

mod evaluate;
mod gateway_select;
mod schedule;
mod snapshot;

use chrono::{DateTime, NaiveTime, TimeZone, Utc, Weekday};
use chrono_tz::Tz;
use keyhole_proto::{ClientId, Resource, ResourceAddress, ResourceId, SiteId};

use super::*;

pub(super) fn utc(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

/// A wall-clock time in `tz`, which must exist and be unambiguous.
pub(super) fn local(tz: Tz, s: &str) -> DateTime<Utc> {
    let naive = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap();
    tz.from_local_datetime(&naive)
        .single()
        .unwrap()
        .with_timezone(&Utc)
}

pub(super) fn hm(s: &str) -> NaiveTime {
    NaiveTime::parse_from_str(s, "%H:%M").unwrap()
}

pub(super) fn window(days: &[Weekday], start: &str, end: &str) -> TimeWindow {
    TimeWindow {
        days: days.iter().copied().collect(),
        start: hm(start),
        end: hm(end),
    }
}

pub(super) fn schedule(tz: Tz, windows: Vec<TimeWindow>) -> Schedule {
    Schedule {
        timezone: tz,
        windows,
    }
}

pub(super) fn resource(id: u128, sites: &[u128]) -> Resource {
    Resource {
        id: ResourceId::from_u128(id),
        name: format!("r{id}").try_into().unwrap(),
        address: ResourceAddress::Ip {
            ip: [10, 0, 0, id as u8].into(),
        },
        filters: vec![],
        site_ids: sites.iter().map(|s| SiteId::from_u128(*s)).collect(),
    }
}

pub(super) const ALICE: ActorId = ActorId::User(UserId::from_u128(1));
pub(super) const BOB: ActorId = ActorId::User(UserId::from_u128(2));
pub(super) const ROBOT: ActorId = ActorId::ServiceAccount(ServiceAccountId::from_u128(3));
pub(super) const ENGINEERS: GroupId = GroupId::from_u128(10);
pub(super) const SALES: GroupId = GroupId::from_u128(11);
pub(super) const ALICE_LAPTOP: ClientId = ClientId::from_u128(100);
pub(super) const BOB_PHONE: ClientId = ClientId::from_u128(101);
pub(super) const ROBOT_CLIENT: ClientId = ClientId::from_u128(102);
pub(super) const WIKI: ResourceId = ResourceId::from_u128(1000);
pub(super) const DB: ResourceId = ResourceId::from_u128(1001);

/// Alice (engineers) and Bob (sales) with a client each, a robot service
/// account in engineers, two resources, and no policies yet.
pub(super) fn base_snapshot() -> Snapshot {
    let mut s = Snapshot::default();
    for id in [ALICE, BOB, ROBOT] {
        s.upsert_actor(Actor {
            id,
            disabled: false,
        });
    }
    s.upsert_group(ENGINEERS);
    s.upsert_group(SALES);
    assert!(s.add_membership(ALICE, ENGINEERS));
    assert!(s.add_membership(BOB, SALES));
    assert!(s.add_membership(ROBOT, ENGINEERS));
    for (id, owner) in [
        (ALICE_LAPTOP, ALICE),
        (BOB_PHONE, BOB),
        (ROBOT_CLIENT, ROBOT),
    ] {
        s.upsert_client(Client {
            id,
            owner,
            disabled: false,
        });
    }
    s.upsert_resource(resource(1000, &[1]));
    s.upsert_resource(resource(1001, &[1]));
    s
}

pub(super) fn policy(id: u128, group: GroupId, resource: ResourceId) -> Policy {
    Policy {
        id: PolicyId::from_u128(id),
        group_id: group,
        resource_id: resource,
        enabled: true,
        conditions: Conditions::default(),
    }
}

/// Alice on her laptop asking for the wiki from 198.51.100.7 with a
/// password session that does not expire.
pub(super) fn alice_wants_wiki(now: DateTime<Utc>) -> AccessRequest {
    AccessRequest {
        actor: ALICE,
        client: ALICE_LAPTOP,
        resource: WIKI,
        now,
        remote_ip: "198.51.100.7".parse().unwrap(),
        sign_in_method: SignInMethod::Password,
        token_expiry: None,
    }
}

use chrono::TimeZone;
use keyhole_proto::messages::{
    AuthorizeFlow, GatewayInit, ResourceChange, ResourceDeleted, Revoke,
};
use keyhole_proto::{Filter, PresharedKey, ResourceAddress, SiteId};

use super::*;
use crate::policy::{PortRange, Protocol};

fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
}

fn tunnel(n: u8) -> TunnelAddresses {
    TunnelAddresses::new(
        format!("100.64.0.{n}").parse().unwrap(),
        format!("fd00::{n}").parse().unwrap(),
    )
    .unwrap()
}

fn ice(c: char) -> IceCredentials {
    IceCredentials::new(c.to_string().repeat(4), c.to_string().repeat(22)).unwrap()
}

fn resource(id: u128, address: ResourceAddress, filters: Vec<Filter>) -> Resource {
    Resource {
        id: ResourceId::from_u128(id),
        name: "r".to_string().try_into().unwrap(),
        address,
        filters,
        site_ids: vec![SiteId::from_u128(1)],
    }
}

fn ip_resource(id: u128, ip: &str) -> Resource {
    resource(
        id,
        ResourceAddress::Ip {
            ip: ip.parse().unwrap(),
        },
        vec![],
    )
}

fn authorize(
    flow: u128,
    client: u128,
    key: u8,
    r: Resource,
    expires: i64,
) -> Envelope<PortalToGateway> {
    Envelope::request(
        RequestId(flow as u64),
        PortalToGateway::AuthorizeFlow(AuthorizeFlow {
            flow_id: FlowId::from_u128(flow),
            client_id: ClientId::from_u128(client),
            client_public_key: PublicKey::from_bytes([key; 32]),
            preshared_key: PresharedKey::from_bytes([9; 32]),
            client_tunnel_addresses: tunnel(client as u8),
            resource: r,
            client_ice: ice('c'),
            gateway_ice: ice('g'),
            expires_at: t(expires),
            dns: vec![],
        }),
    )
}

fn init(resources: Vec<Resource>) -> Envelope<PortalToGateway> {
    Envelope::new(PortalToGateway::Init(GatewayInit {
        gateway_id: GatewayId::from_u128(7),
        site_id: SiteId::from_u128(1),
        tunnel_addresses: tunnel(1),
        resources,
        relays: vec![],
    }))
}

fn drain(s: &mut Session) -> Vec<Action> {
    std::iter::from_fn(|| s.poll_action()).collect()
}

fn connected_session() -> Session {
    let mut s = Session::new(SessionConfig::default());
    s.connected(t(0));
    s.handle_message(t(0), init(vec![ip_resource(1, "10.0.1.10")]));
    let a = drain(&mut s);
    assert_eq!(a, vec![Action::SetTunnelAddresses(tunnel(1))]);
    s
}

/// Installs flow `flow` and confirms it; returns the install.
fn install(s: &mut Session, env: Envelope<PortalToGateway>) -> FlowInstall {
    s.handle_message(t(1), env);
    let mut a = drain(s);
    assert_eq!(a.len(), 1, "{a:?}");
    let Action::InstallFlow(i) = a.remove(0) else {
        panic!("{a:?}")
    };
    s.flow_installed(i.flow_id, Ok(()));
    let a = drain(s);
    assert!(
        matches!(&a[..], [Action::Send(e)] if matches!(e.message, GatewayToPortal::FlowAuthorized(f) if f.flow_id == i.flow_id)),
        "{a:?}"
    );
    *i
}

#[test]
fn authorize_installs_peer_rules_and_nat_then_replies() {
    let mut s = connected_session();
    let r = resource(
        2,
        ResourceAddress::Cidr {
            cidr: "10.0.2.0/24".parse().unwrap(),
        },
        vec![
            serde_json::from_str(r#"{"protocol":"tcp","ports":{"start":80,"end":443}}"#).unwrap(),
            serde_json::from_str(r#"{"protocol":"icmp"}"#).unwrap(),
        ],
    );
    s.handle_message(t(1), authorize(10, 5, 1, r, 100));
    let a = drain(&mut s);
    let [Action::InstallFlow(i)] = &a[..] else {
        panic!("{a:?}")
    };
    let peer = i.peer.as_ref().expect("first flow makes the peer");
    assert_eq!(peer.peer.public_key, PublicKey::from_bytes([1; 32]));
    assert_eq!(peer.local_ice, ice('g'));
    assert_eq!(peer.remote_ice, ice('c'));
    assert_eq!(i.nat, tunnel(5));
    let rules: Vec<(IpAddr, Protocol, PortRange)> = i
        .authorizations
        .iter()
        .map(|a| (a.client_ip, a.proto, a.ports))
        .collect();
    assert_eq!(
        rules,
        vec![
            (
                "100.64.0.5".parse().unwrap(),
                Protocol::Tcp,
                PortRange::new(80, 443).unwrap()
            ),
            (
                "100.64.0.5".parse().unwrap(),
                Protocol::Icmp,
                PortRange::ALL
            ),
        ]
    );
    // Not answered before the data plane confirms.
    assert_eq!(s.load().active_flows, 0);
    s.flow_installed(i.flow_id, Ok(()));
    let a = drain(&mut s);
    let [Action::Send(e)] = &a[..] else {
        panic!("{a:?}")
    };
    assert_eq!(e.reply_to, Some(RequestId(10)));
    assert_eq!(
        s.load(),
        GatewayLoad {
            active_flows: 1,
            connected_clients: 1
        }
    );

    // A second flow of the same client reuses the peer.
    let i2 = install(
        &mut s,
        authorize(11, 5, 1, ip_resource(1, "10.0.1.10"), 100),
    );
    assert!(i2.peer.is_none());
}

use std::net::IpAddr;

#[test]
fn revoke_flow_keeps_peer_until_last_flow() {
    let mut s = connected_session();
    let a1 = install(
        &mut s,
        authorize(10, 5, 1, ip_resource(1, "10.0.1.10"), 100),
    );
    let _a2 = install(
        &mut s,
        authorize(11, 5, 1, ip_resource(2, "10.0.1.11"), 100),
    );
    s.handle_message(
        t(2),
        Envelope::new(PortalToGateway::Revoke(Revoke {
            target: RevokeTarget::Flow {
                flow_id: FlowId::from_u128(10),
            },
        })),
    );
    let a = drain(&mut s);
    assert_eq!(
        a,
        vec![
            Action::Unauthorize(a1.authorizations.iter().map(|a| a.id).collect()),
            Action::NatRelease(tunnel(5)),
        ]
    );
    s.handle_message(
        t(3),
        Envelope::new(PortalToGateway::Revoke(Revoke {
            target: RevokeTarget::Client {
                client_id: ClientId::from_u128(5),
            },
        })),
    );
    let a = drain(&mut s);
    assert_eq!(a.len(), 3, "{a:?}");
    assert_eq!(
        a[2],
        Action::RemovePeer {
            client_id: ClientId::from_u128(5),
            public_key: PublicKey::from_bytes([1; 32])
        }
    );
    assert_eq!(s.load(), GatewayLoad::default());
}

#[test]
fn flows_expire_on_their_own_even_while_disconnected() {
    let mut s = connected_session();
    install(&mut s, authorize(10, 5, 1, ip_resource(1, "10.0.1.10"), 50));
    install(&mut s, authorize(11, 6, 2, ip_resource(1, "10.0.1.10"), 80));
    s.disconnected();
    assert_eq!(s.poll_timeout(), Some(t(50)));
    s.handle_timeout(t(49));
    assert!(drain(&mut s).is_empty());
    s.handle_timeout(t(50));
    let a = drain(&mut s);
    assert!(matches!(a[0], Action::Unauthorize(_)), "{a:?}");
    assert!(
        matches!(a[2], Action::RemovePeer { client_id, .. } if client_id == ClientId::from_u128(5))
    );
    assert!(
        !a.iter().any(|a| matches!(a, Action::Send(_))),
        "nothing sent while away"
    );
    assert_eq!(s.poll_timeout(), Some(t(80)));
    assert_eq!(s.load().active_flows, 1);
}

#[test]
fn heartbeat_only_while_connected() {
    let mut s = connected_session();
    let hb = s.poll_timeout().unwrap();
    assert_eq!(hb, t(30));
    s.handle_timeout(hb);
    let a = drain(&mut s);
    assert!(
        matches!(&a[..], [Action::Send(e)] if matches!(e.message, GatewayToPortal::Heartbeat(_)))
    );
    s.disconnected();
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn failed_install_forgets_the_flow_without_reply() {
    let mut s = connected_session();
    s.handle_message(t(1), authorize(10, 5, 1, ip_resource(1, "10.0.1.10"), 100));
    drain(&mut s);
    s.flow_installed(FlowId::from_u128(10), Err("filter full".into()));
    assert!(drain(&mut s).is_empty());
    assert_eq!(s.load(), GatewayLoad::default());
    assert_eq!(s.poll_timeout(), Some(t(30)));
}

#[test]
fn reply_is_not_sent_on_a_newer_connection() {
    let mut s = connected_session();
    s.handle_message(t(1), authorize(10, 5, 1, ip_resource(1, "10.0.1.10"), 100));
    drain(&mut s);
    s.disconnected();
    s.connected(t(2));
    s.flow_installed(FlowId::from_u128(10), Ok(()));
    assert!(drain(&mut s).is_empty());
    assert_eq!(s.load().active_flows, 1);
}

#[test]
fn resource_update_swaps_rules_and_delete_revokes() {
    let mut s = connected_session();
    let i = install(
        &mut s,
        authorize(10, 5, 1, ip_resource(1, "10.0.1.10"), 100),
    );
    s.handle_message(
        t(2),
        Envelope::new(PortalToGateway::ResourceUpdated(ResourceChange {
            resource: ip_resource(1, "10.0.1.20"),
        })),
    );
    let a = drain(&mut s);
    let [Action::Authorize(new), Action::Unauthorize(old)] = &a[..] else {
        panic!("{a:?}")
    };
    assert_eq!(new[0].dst, "10.0.1.20/32".parse().unwrap());
    assert_eq!(old, &vec![i.authorizations[0].id]);
    s.handle_message(
        t(3),
        Envelope::new(PortalToGateway::ResourceDeleted(ResourceDeleted {
            resource_id: ResourceId::from_u128(1),
        })),
    );
    let a = drain(&mut s);
    assert_eq!(a[0], Action::Unauthorize(vec![new[0].id]));
    assert!(matches!(a.last(), Some(Action::RemovePeer { .. })));
}

#[test]
fn reinit_revokes_flows_of_resources_gone_while_away() {
    let mut s = connected_session();
    install(
        &mut s,
        authorize(10, 5, 1, ip_resource(1, "10.0.1.10"), 100),
    );
    install(
        &mut s,
        authorize(11, 6, 2, ip_resource(2, "10.0.1.11"), 100),
    );
    s.disconnected();
    s.connected(t(5));
    s.handle_message(t(5), init(vec![ip_resource(2, "10.0.1.11")]));
    let a = drain(&mut s);
    assert!(
        matches!(&a[..], [Action::Unauthorize(_), Action::NatRelease(n), Action::RemovePeer { .. }] if *n == tunnel(5)),
        "{a:?}"
    );
    assert_eq!(s.load().active_flows, 1);
}

#[test]
fn dns_flows_without_assignments_and_garbage_are_refused_cleanly() {
    let mut s = connected_session();
    let dns = resource(
        3,
        serde_json::from_str(r#"{"kind":"dns","pattern":"db.example.com"}"#).unwrap(),
        vec![],
    );
    s.handle_message(t(1), authorize(10, 5, 1, dns, 100));
    assert!(drain(&mut s).is_empty());
    s.handle_frame(
        t(1),
        br#"{"v":1,"type":"authorize_flow","id":3,"payload":{"flow_id":"nope"}}"#,
    );
    assert!(drain(&mut s).is_empty());
    s.handle_frame(t(1), b"not json");
    assert_eq!(
        drain(&mut s),
        vec![Action::Close(keyhole_proto::CLOSE_PROTOCOL_ERROR)]
    );
    s.handle_frame(t(1), br#"{"v":1,"type":"future_thing"}"#);
    assert!(drain(&mut s).is_empty());
}

#[test]
fn candidates_flow_both_ways_only_for_known_clients() {
    let mut s = connected_session();
    let c: IceCandidate = "candidate:1 1 udp 2130706431 192.0.2.1 51820 typ host"
        .to_string()
        .try_into()
        .unwrap();
    s.local_candidate(ClientId::from_u128(5), c.clone());
    assert!(drain(&mut s).is_empty());
    install(
        &mut s,
        authorize(10, 5, 1, ip_resource(1, "10.0.1.10"), 100),
    );
    s.local_candidate(ClientId::from_u128(5), c.clone());
    let a = drain(&mut s);
    assert!(
        matches!(&a[..], [Action::Send(e)] if matches!(&e.message, GatewayToPortal::IceCandidates(cc) if cc.candidates == vec![c.clone()]))
    );
    s.handle_message(
        t(2),
        Envelope::new(PortalToGateway::IceCandidates(ClientCandidates {
            client_id: ClientId::from_u128(5),
            candidates: vec![c.clone()],
        })),
    );
    assert_eq!(
        drain(&mut s),
        vec![Action::AddRemoteCandidates {
            client_id: ClientId::from_u128(5),
            candidates: vec![c]
        }]
    );
}

#[test]
fn new_key_or_failed_connection_gets_a_fresh_peer() {
    let mut s = connected_session();
    install(
        &mut s,
        authorize(10, 5, 1, ip_resource(1, "10.0.1.10"), 100),
    );
    // The client re-keyed: the new flow replaces its peer.
    let i = install(
        &mut s,
        authorize(11, 5, 2, ip_resource(1, "10.0.1.10"), 100),
    );
    assert_eq!(i.replaces, Some(PublicKey::from_bytes([1; 32])));
    assert_eq!(
        i.peer.unwrap().peer.public_key,
        PublicKey::from_bytes([2; 32])
    );
    // The tunnel gave up on it: the next flow makes a new connection.
    s.connection_failed(ClientId::from_u128(5));
    let i = install(
        &mut s,
        authorize(12, 5, 2, ip_resource(1, "10.0.1.10"), 100),
    );
    assert!(i.peer.is_some());
    assert_eq!(s.load().connected_clients, 1);
}

#[test]
fn retried_request_is_answered_again_without_reinstalling() {
    let mut s = connected_session();
    install(
        &mut s,
        authorize(10, 5, 1, ip_resource(1, "10.0.1.10"), 100),
    );
    s.handle_message(t(2), authorize(10, 5, 1, ip_resource(1, "10.0.1.10"), 100));
    let a = drain(&mut s);
    assert!(
        matches!(&a[..], [Action::Send(e)] if e.reply_to == Some(RequestId(10))),
        "{a:?}"
    );
}

fn dns_authorize(flow: u128, client: u128, names: &[(&str, &[&str])]) -> Envelope<PortalToGateway> {
    let r = resource(
        3,
        serde_json::from_str(r#"{"kind":"dns","pattern":"*.corp"}"#).unwrap(),
        vec![],
    );
    let mut env = authorize(flow, client, 1, r, 100);
    if let PortalToGateway::AuthorizeFlow(a) = &mut env.message {
        a.dns = names
            .iter()
            .map(|(n, ips)| keyhole_proto::DnsProxyAssignment {
                name: (*n).into(),
                proxy_ips: ips.iter().map(|i| i.parse().unwrap()).collect(),
            })
            .collect();
    }
    env
}

#[test]
fn dns_flows_authorise_proxy_ips_and_a_later_flow_replaces_the_set() {
    let mut s = connected_session();
    s.handle_message(
        t(1),
        dns_authorize(10, 5, &[("a.corp", &["100.96.0.1", "fd00:6b68::1"])]),
    );
    let a = drain(&mut s);
    let [Action::InstallFlow(i)] = &a[..] else {
        panic!("{a:?}")
    };
    // The filter admits the proxy IPs, each from the client's address of
    // its family.
    let dsts: Vec<(String, String)> = i
        .authorizations
        .iter()
        .map(|a| (a.client_ip.to_string(), a.dst.to_string()))
        .collect();
    assert_eq!(
        dsts,
        vec![
            ("100.64.0.5".into(), "100.96.0.1/32".into()),
            ("fd00::5".into(), "fd00:6b68::1/128".into()),
        ]
    );
    assert_eq!(i.dns.len(), 1);
    let old_ids: Vec<_> = i.authorizations.iter().map(|a| a.id).collect();
    s.flow_installed(FlowId::from_u128(10), Ok(()));
    drain(&mut s);

    // Same client, same resource, new set: installed first, then the old
    // flow leaves (rules, DNS set, one NAT reference; the peer stays).
    s.handle_message(t(2), dns_authorize(11, 5, &[("b.corp", &["100.96.0.2"])]));
    let a = drain(&mut s);
    assert!(
        matches!(&a[..], [
            Action::InstallFlow(n),
            Action::Unauthorize(ids),
            Action::DnsRemove(f),
            Action::NatRelease(_),
        ] if n.peer.is_none() && *ids == old_ids && *f == FlowId::from_u128(10)),
        "{a:?}"
    );
    s.flow_installed(FlowId::from_u128(11), Ok(()));
    drain(&mut s);
    assert_eq!(s.load().active_flows, 1);

    // Revocation takes its DNS set too.
    s.handle_message(
        t(3),
        Envelope::new(PortalToGateway::Revoke(keyhole_proto::messages::Revoke {
            target: RevokeTarget::Flow {
                flow_id: FlowId::from_u128(11),
            },
        })),
    );
    let a = drain(&mut s);
    assert!(
        a.contains(&Action::DnsRemove(FlowId::from_u128(11))),
        "{a:?}"
    );
}

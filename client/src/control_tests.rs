use super::*;

fn t0() -> Instant {
    Instant::now()
}

fn frame(v: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&v).unwrap()
}

const GW: &str = "00000000-0000-0000-0000-0000000000a1";
const R_IP: &str = "00000000-0000-0000-0000-000000000001";
const R_NET: &str = "00000000-0000-0000-0000-000000000002";
const R_DNS: &str = "00000000-0000-0000-0000-000000000003";

fn init() -> Vec<u8> {
    frame(serde_json::json!({
        "v": 1, "type": "init", "payload": {
            "client_id": "00000000-0000-0000-0000-0000000000c1",
            "tunnel_addresses": {"ipv4": "100.64.0.2", "ipv6": "fd00::2"},
            "resources": [
                {"id": R_IP, "name": "web", "address": {"kind": "ip", "ip": "10.20.0.10"}},
                {"id": R_NET, "name": "lan", "address": {"kind": "cidr", "cidr": "10.20.0.0/16"}},
                {"id": R_DNS, "name": "wiki", "address": {"kind": "dns", "pattern": "wiki.corp"}}
            ]
        }
    }))
}

fn flow_created(flow: &str, resource: &str, key_byte: u8) -> Vec<u8> {
    let key = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [key_byte; 32]);
    frame(serde_json::json!({
        "v": 1, "type": "flow_created", "reply_to": 1, "payload": {
            "flow_id": flow, "resource_id": resource, "gateway_id": GW,
            "site_id": "00000000-0000-0000-0000-0000000000e1",
            "gateway_public_key": key,
            "preshared_key": key,
            "gateway_tunnel_addresses": {"ipv4": "100.64.0.1", "ipv6": "fd00::1"},
            "client_ice": {"username": "abcd", "password": "abcdefghijklmnopqrstuvwx"},
            "gateway_ice": {"username": "efgh", "password": "abcdefghijklmnopqrstuvwx"},
            "expires_at": "2030-01-01T00:00:00Z"
        }
    }))
}

fn drain(c: &mut Control) -> Vec<Action> {
    std::iter::from_fn(|| c.poll_action()).collect()
}

fn up(now: Instant) -> Control {
    let mut c = Control::new();
    c.connected();
    c.handle_frame(now, &init());
    c
}

fn requested(a: &[Action]) -> Vec<ResourceId> {
    a.iter()
        .filter_map(|a| match a {
            Action::Send(Envelope {
                message: ClientToPortal::RequestFlow(r),
                ..
            }) => Some(r.resource_id),
            _ => None,
        })
        .collect()
}

#[test]
fn init_sets_addresses_and_routes_only_address_resources() {
    let mut c = Control::new();
    c.connected();
    c.handle_frame(t0(), &init());
    let a = drain(&mut c);
    assert!(matches!(a[0], Action::SetTunnelAddresses(t) if t.ipv4.to_string() == "100.64.0.2"));
    assert_eq!(
        a[1],
        Action::SetRoutes(vec![
            "10.20.0.0/16".parse().unwrap(),
            "10.20.0.10/32".parse().unwrap(),
            "100.96.0.0/11".parse().unwrap(),
            "fd00:6b68::/32".parse().unwrap(),
        ])
    );
    assert_eq!(a.len(), 2);
    // A second init with the same addresses does not touch the TUN again.
    c.handle_frame(t0(), &init());
    assert!(matches!(drain(&mut c)[..], [Action::SetRoutes(_)]));
}

#[test]
fn first_packet_asks_once_for_the_most_specific_resource() {
    let now = t0();
    let mut c = up(now);
    drain(&mut c);
    assert_eq!(
        c.need_flow(now, "10.20.0.10".parse().unwrap()),
        Some(R_IP.parse().unwrap())
    );
    let a = drain(&mut c);
    assert_eq!(requested(&a), vec![R_IP.parse::<ResourceId>().unwrap()]);
    // The tunnel re-reports the held destination: no second request yet.
    assert_eq!(
        c.need_flow(now + Duration::from_secs(2), "10.20.0.10".parse().unwrap()),
        None
    );
    assert!(drain(&mut c).is_empty());
    // Unanswered for long enough: asked again.
    assert!(
        c.need_flow(now + REQUEST_RETRY, "10.20.0.10".parse().unwrap())
            .is_some()
    );
    // Another host in the CIDR maps to the CIDR resource.
    assert_eq!(
        c.need_flow(now, "10.20.3.4".parse().unwrap()),
        Some(R_NET.parse().unwrap())
    );
    // Nothing covers this address.
    assert_eq!(c.need_flow(now, "192.0.2.1".parse().unwrap()), None);
}

#[test]
fn no_request_while_the_portal_is_away() {
    let now = t0();
    let mut c = up(now);
    drain(&mut c);
    c.disconnected();
    assert_eq!(c.need_flow(now, "10.20.0.10".parse().unwrap()), None);
    assert!(drain(&mut c).is_empty());
    c.connected();
    assert!(c.need_flow(now, "10.20.0.10".parse().unwrap()).is_some());
}

#[test]
fn flow_created_adds_one_connection_per_gateway_and_routes_each_resource() {
    let now = t0();
    let mut c = up(now);
    drain(&mut c);
    c.need_flow(now, "10.20.0.10".parse().unwrap());
    drain(&mut c);
    c.handle_frame(
        now,
        &flow_created("00000000-0000-0000-0000-0000000000f1", R_IP, 7),
    );
    let a = drain(&mut c);
    assert!(matches!(&a[0], Action::AddConnection(f) if f.resource_id.to_string() == R_IP));
    assert_eq!(
        a[1],
        Action::RouteToGateway {
            gateway_id: GW.parse().unwrap(),
            net: "10.20.0.10/32".parse().unwrap()
        }
    );
    // A second resource through the same gateway (same key): route only,
    // and the request says which gateways we already have.
    c.need_flow(now, "10.20.1.1".parse().unwrap());
    let a = drain(&mut c);
    let Action::Send(Envelope {
        message: ClientToPortal::RequestFlow(r),
        ..
    }) = &a[0]
    else {
        panic!("{a:?}")
    };
    assert_eq!(r.connected_gateway_ids, vec![GW.parse().unwrap()]);
    c.handle_frame(
        now,
        &flow_created("00000000-0000-0000-0000-0000000000f2", R_NET, 7),
    );
    let a = drain(&mut c);
    assert_eq!(
        a,
        vec![Action::RouteToGateway {
            gateway_id: GW.parse().unwrap(),
            net: "10.20.0.0/16".parse().unwrap()
        }]
    );
    // The gateway restarted with a new key: the connection is replaced.
    c.handle_frame(
        now,
        &flow_created("00000000-0000-0000-0000-0000000000f3", R_IP, 9),
    );
    let a = drain(&mut c);
    assert_eq!(a[0], Action::RemoveConnection(GW.parse().unwrap()));
    assert!(matches!(a[1], Action::AddConnection(_)));
}

#[test]
fn flow_failed_holds_off_further_requests() {
    let now = t0();
    let mut c = up(now);
    drain(&mut c);
    c.need_flow(now, "10.20.0.10".parse().unwrap());
    drain(&mut c);
    c.handle_frame(
        now,
        &frame(serde_json::json!({"v":1,"type":"flow_failed","reply_to":1,
            "payload":{"resource_id": R_IP, "reason":"not_allowed"}})),
    );
    assert!(drain(&mut c).is_empty());
    assert_eq!(
        c.need_flow(now + Duration::from_secs(2), "10.20.0.10".parse().unwrap()),
        None
    );
    let s = c.status();
    let r = s.resources.iter().find(|r| r.id == R_IP).unwrap();
    assert_eq!(r.state, "failed: NotAllowed");
    assert!(
        c.need_flow(now + FAILED_HOLD_OFF, "10.20.0.10".parse().unwrap())
            .is_some()
    );
}

#[test]
fn revocation_unroutes_and_drops_the_connection_with_its_last_flow() {
    let now = t0();
    let mut c = up(now);
    c.handle_frame(
        now,
        &flow_created("00000000-0000-0000-0000-0000000000f1", R_IP, 7),
    );
    c.handle_frame(
        now,
        &flow_created("00000000-0000-0000-0000-0000000000f2", R_NET, 7),
    );
    drain(&mut c);
    let revoke = |flow: &str| {
        frame(serde_json::json!({"v":1,"type":"revoked",
            "payload":{"target":{"kind":"flow","flow_id": flow}}}))
    };
    c.handle_frame(now, &revoke("00000000-0000-0000-0000-0000000000f1"));
    assert_eq!(
        drain(&mut c),
        vec![Action::Unroute("10.20.0.10/32".parse().unwrap())]
    );
    c.handle_frame(now, &revoke("00000000-0000-0000-0000-0000000000f2"));
    assert_eq!(
        drain(&mut c),
        vec![
            Action::Unroute("10.20.0.0/16".parse().unwrap()),
            Action::RemoveConnection(GW.parse().unwrap())
        ]
    );
    // Unknown flow: nothing.
    c.handle_frame(now, &revoke("00000000-0000-0000-0000-0000000000f9"));
    assert!(drain(&mut c).is_empty());
}

#[test]
fn candidates_flow_both_ways_and_a_failed_tunnel_is_forgotten() {
    let now = t0();
    let mut c = up(now);
    // Candidates for a gateway we have no connection to are ignored.
    let cands = frame(serde_json::json!({"v":1,"type":"ice_candidates",
        "payload":{"gateway_id": GW,
        "candidates":["candidate:1 1 udp 2130706431 10.10.0.2 51820 typ host"]}}));
    c.handle_frame(now, &cands);
    drain(&mut c);
    c.handle_frame(
        now,
        &flow_created("00000000-0000-0000-0000-0000000000f1", R_IP, 7),
    );
    drain(&mut c);
    c.handle_frame(now, &cands);
    assert!(
        matches!(&drain(&mut c)[..], [Action::AddRemoteCandidates { candidates, .. }] if candidates.len() == 1)
    );
    let local: IceCandidate = "candidate:2 1 udp 2130706431 10.10.0.1 4000 typ host"
        .to_string()
        .try_into()
        .unwrap();
    c.local_candidate(GW.parse().unwrap(), local);
    assert!(matches!(
        &drain(&mut c)[..],
        [Action::Send(Envelope {
            message: ClientToPortal::IceCandidates(_),
            ..
        })]
    ));
    c.connection_up(
        now + Duration::from_millis(30),
        GW.parse().unwrap(),
        PathKind::Direct,
        "10.10.0.2:51820".into(),
    );
    let s = c.status();
    assert_eq!(s.connections[0].path, "direct");
    assert_eq!(s.connections[0].flows, 1);
    c.connection_failed(GW.parse().unwrap());
    assert_eq!(
        drain(&mut c),
        vec![
            Action::Unroute("10.20.0.10/32".parse().unwrap()),
            Action::RemoveConnection(GW.parse().unwrap())
        ]
    );
    assert!(c.status().connections.is_empty());
    // And the next packet asks again.
    assert!(c.need_flow(now, "10.20.0.10".parse().unwrap()).is_some());
}

#[test]
fn deleted_resources_lose_routes_and_flows_and_bad_frames_change_nothing() {
    let now = t0();
    let mut c = up(now);
    c.handle_frame(
        now,
        &flow_created("00000000-0000-0000-0000-0000000000f1", R_IP, 7),
    );
    drain(&mut c);
    c.handle_frame(now, b"{not json");
    c.handle_frame(
        now,
        br#"{"v":1,"type":"flow_created","payload":{"flow_id":3}}"#,
    );
    c.handle_frame(now, br#"{"v":1,"type":"something_new","payload":{}}"#);
    assert!(drain(&mut c).is_empty());
    c.handle_frame(
        now,
        &frame(
            serde_json::json!({"v":1,"type":"resource_deleted","payload":{"resource_id": R_IP}}),
        ),
    );
    let a = drain(&mut c);
    assert_eq!(a[0], Action::Unroute("10.20.0.10/32".parse().unwrap()));
    assert_eq!(a[1], Action::RemoveConnection(GW.parse().unwrap()));
    assert_eq!(
        a[2],
        Action::SetRoutes(vec![
            "10.20.0.0/16".parse().unwrap(),
            "100.96.0.0/11".parse().unwrap(),
            "fd00:6b68::/32".parse().unwrap(),
        ])
    );
    assert_eq!(
        c.need_flow(now, "10.20.0.10".parse().unwrap()),
        Some(R_NET.parse().unwrap())
    );
}

fn dns_query(name: &str) -> Vec<u8> {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RecordType};
    let mut m = Message::new();
    m.set_id(7)
        .add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    m.to_vec().unwrap()
}

fn answered_ip(reply: crate::dns::Reply) -> IpAddr {
    let crate::dns::Reply::Answer(a) = reply else {
        panic!("{reply:?}")
    };
    let m = hickory_proto::op::Message::from_vec(&a).unwrap();
    match m.answers()[0].data() {
        hickory_proto::rr::RData::A(a) => IpAddr::V4(a.0),
        other => panic!("{other:?}"),
    }
}

#[test]
fn dns_names_get_proxy_ips_and_the_first_packet_asks_with_all_names() {
    let now = t0();
    let mut c = up(now);
    drain(&mut c);
    // Not a resource: upstream.
    assert_eq!(
        c.dns_query(&dns_query("example.com.")),
        crate::dns::Reply::Forward
    );
    let ip = answered_ip(c.dns_query(&dns_query("WIKI.corp.")));
    assert_eq!(answered_ip(c.dns_query(&dns_query("wiki.corp."))), ip);
    assert!(crate::dns::is_proxy_ip(ip));
    // Answering asks for nothing; the first packet to the proxy IP does.
    assert!(drain(&mut c).is_empty());
    assert_eq!(c.need_flow(now, ip), Some(R_DNS.parse().unwrap()));
    let a = drain(&mut c);
    let Action::Send(Envelope {
        message: ClientToPortal::RequestFlow(r),
        ..
    }) = &a[0]
    else {
        panic!("{a:?}")
    };
    assert_eq!(r.dns.len(), 1);
    assert_eq!(r.dns[0].name, "wiki.corp");
    assert_eq!(r.dns[0].proxy_ips[0], ip);
    keyhole_proto::check_dns_assignments(Some(&"wiki.corp".parse().unwrap()), &r.dns).unwrap();
    // An unassigned proxy IP asks for nothing.
    assert_eq!(c.need_flow(now, "100.96.9.9".parse().unwrap()), None);
    // The flow routes exactly the proxy IPs it carried.
    c.handle_frame(
        now,
        &flow_created("00000000-0000-0000-0000-0000000000f1", R_DNS, 7),
    );
    let a = drain(&mut c);
    let routed: Vec<IpNet> = a
        .iter()
        .filter_map(|a| match a {
            Action::RouteToGateway { net, .. } => Some(*net),
            _ => None,
        })
        .collect();
    assert_eq!(routed.len(), 2);
    assert_eq!(routed[0], IpNet::from(ip));
    assert_eq!(
        c.status()
            .resources
            .iter()
            .find(|r| r.id == R_DNS)
            .unwrap()
            .state,
        "connected"
    );
}

#[test]
fn an_error_reply_to_a_request_holds_off_like_a_failure() {
    let now = t0();
    let mut c = up(now);
    drain(&mut c);
    c.need_flow(now, "10.20.0.10".parse().unwrap());
    let a = drain(&mut c);
    let Action::Send(env) = &a[0] else {
        panic!("{a:?}")
    };
    let id = env.id.unwrap().0;
    c.handle_frame(
        now,
        &frame(serde_json::json!({"v":1,"type":"error","reply_to": id,
            "payload":{"code":"bad_request","message":"no"}})),
    );
    assert_eq!(
        c.need_flow(now + Duration::from_secs(1), "10.20.0.10".parse().unwrap()),
        None
    );
    assert!(
        c.need_flow(now + FAILED_HOLD_OFF, "10.20.0.10".parse().unwrap())
            .is_some()
    );
    // An error that answers nothing of ours changes nothing.
    c.handle_frame(
        now,
        &frame(serde_json::json!({"v":1,"type":"error",
            "payload":{"code":"internal","message":"?"}})),
    );
    assert_eq!(
        c.status()
            .resources
            .iter()
            .find(|r| r.id == R_IP)
            .unwrap()
            .state,
        "requested"
    );
}

#[test]
fn the_internet_resource_is_a_full_tunnel_behind_more_specific_resources() {
    const R_NET0: &str = "00000000-0000-0000-0000-000000000009";
    let now = t0();
    let mut c = up(now);
    drain(&mut c);
    c.handle_frame(
        now,
        &frame(serde_json::json!({
            "v": 1, "type": "resource_created", "payload": {"resource":
                {"id": R_NET0, "name": "internet", "address": {"kind": "internet"}}}
        })),
    );
    let a = drain(&mut c);
    let Some(Action::SetRoutes(nets)) = a.last() else {
        panic!("{a:?}")
    };
    assert!(nets.contains(&FULL_TUNNEL_V4) && nets.contains(&FULL_TUNNEL_V6));
    // Anything else asks for the internet resource; resources keep theirs.
    assert_eq!(
        c.need_flow(now, "192.0.2.1".parse().unwrap()),
        Some(R_NET0.parse().unwrap())
    );
    assert_eq!(
        c.need_flow(now, "2001:db8::1".parse().unwrap()),
        None,
        "asked already: one request covers both families"
    );
    assert_eq!(
        c.need_flow(now, "10.20.0.10".parse().unwrap()),
        Some(R_IP.parse().unwrap())
    );
    drain(&mut c);
    c.handle_frame(
        now,
        &flow_created("00000000-0000-0000-0000-0000000000f1", R_NET0, 7),
    );
    let a = drain(&mut c);
    let routed: Vec<IpNet> = a
        .iter()
        .filter_map(|a| match a {
            Action::RouteToGateway { net, .. } => Some(*net),
            _ => None,
        })
        .collect();
    assert_eq!(routed, vec![FULL_TUNNEL_V4, FULL_TUNNEL_V6]);
}

#[test]
fn a_gateway_reported_offline_loses_its_flows_and_the_next_packet_asks_again() {
    let now = t0();
    let mut c = up(now);
    c.handle_frame(
        now,
        &flow_created("00000000-0000-0000-0000-0000000000f1", R_IP, 7),
    );
    c.handle_frame(
        now,
        &flow_created("00000000-0000-0000-0000-0000000000f2", R_NET, 7),
    );
    drain(&mut c);
    let offline = |gw: &str| {
        frame(serde_json::json!({"v":1,"type":"gateway_offline","payload":{"gateway_id": gw}}))
    };
    // Another gateway: nothing changes here.
    c.handle_frame(now, &offline("00000000-0000-0000-0000-0000000000a2"));
    assert!(drain(&mut c).is_empty());
    assert_eq!(c.status().connections.len(), 1);

    c.handle_frame(now, &offline(GW));
    let mut got = drain(&mut c);
    let remove = got.pop();
    assert_eq!(remove, Some(Action::RemoveConnection(GW.parse().unwrap())));
    got.sort_by_key(|a| format!("{a:?}"));
    assert_eq!(
        got,
        vec![
            Action::Unroute("10.20.0.0/16".parse().unwrap()),
            Action::Unroute("10.20.0.10/32".parse().unwrap()),
        ]
    );
    assert!(c.status().connections.is_empty());
    // The next packet asks at once, no longer naming the dead gateway.
    assert_eq!(
        c.need_flow(now, "10.20.0.10".parse().unwrap()),
        Some(R_IP.parse().unwrap())
    );
    match &drain(&mut c)[..] {
        [
            Action::Send(Envelope {
                message: ClientToPortal::RequestFlow(r),
                ..
            }),
        ] => assert!(r.connected_gateway_ids.is_empty(), "{r:?}"),
        other => panic!("{other:?}"),
    }
}

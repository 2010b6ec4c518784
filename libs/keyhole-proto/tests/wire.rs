//! Wire-format tests: every message round-trips, a few are frozen as golden
//! JSON, and bad frames give typed errors.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use keyhole_proto::{
    CLOSE_MESSAGE_TOO_BIG, CLOSE_PROTOCOL_ERROR, ClientId, DecodeError, Decoded, DnsPattern,
    Envelope, FlowId, GatewayId, IceCandidate, IceCredentials, MAX_FRAME_BYTES, Message, PortRange,
    PresharedKey, Protocol, PublicKey, RelayId, RelayInfo, RequestId, Resource, ResourceAddress,
    ResourceId, SiteId, TunnelAddresses, TurnCredentials, TurnSecret, decode, messages::*,
};

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn resource() -> Resource {
    Resource {
        id: ResourceId::from_u128(1),
        name: "wiki".to_owned().try_into().unwrap(),
        address: ResourceAddress::Dns {
            pattern: DnsPattern::parse("**.wiki.corp").unwrap(),
        },
        filters: vec![
            keyhole_proto::Filter {
                protocol: Protocol::Tcp,
                ports: Some(PortRange::new(80, 443).unwrap()),
            },
            keyhole_proto::Filter {
                protocol: Protocol::Icmp,
                ports: None,
            },
        ],
        site_ids: vec![SiteId::from_u128(2)],
    }
}

fn addrs(n: u8) -> TunnelAddresses {
    TunnelAddresses::new(
        [100, 64, 0, n].into(),
        format!("fd00:1:2::{n}").parse().unwrap(),
    )
    .unwrap()
}

fn ice(tag: &str) -> IceCredentials {
    IceCredentials::new(format!("{tag}ufrg"), format!("{tag}{}", "p".repeat(22))).unwrap()
}

fn relay() -> RelayInfo {
    let secret = TurnSecret::try_from("0123456789abcdef0123".to_owned()).unwrap();
    RelayInfo {
        id: RelayId::from_u128(9),
        ipv4: Some("203.0.113.7:3478".parse().unwrap()),
        ipv6: None,
        credentials: TurnCredentials::issue(&secret, "client-1", t("2026-05-20T18:00:00Z")),
    }
}

fn candidates() -> Vec<IceCandidate> {
    vec![
        IceCandidate::try_from("candidate:1 1 udp 2130706431 192.0.2.1 51820 typ host".to_owned())
            .unwrap(),
    ]
}

fn client_candidates() -> ClientCandidates {
    ClientCandidates {
        client_id: ClientId::from_u128(3),
        candidates: candidates(),
    }
}

fn gateway_candidates() -> GatewayCandidates {
    GatewayCandidates {
        gateway_id: GatewayId::from_u128(4),
        candidates: candidates(),
    }
}

fn presence() -> RelaysPresence {
    RelaysPresence {
        connected: vec![relay()],
        disconnected_ids: vec![RelayId::from_u128(10)],
    }
}

fn error() -> ErrorReply {
    ErrorReply {
        code: ErrorCode::BadRequest,
        message: "missing field `resource_id`".into(),
    }
}

fn authorize_flow() -> AuthorizeFlow {
    AuthorizeFlow {
        flow_id: FlowId::from_u128(5),
        client_id: ClientId::from_u128(3),
        client_public_key: PublicKey::from_bytes([1; 32]),
        preshared_key: PresharedKey::from_bytes([2; 32]),
        client_tunnel_addresses: addrs(3),
        resource: resource(),
        client_ice: ice("c"),
        gateway_ice: ice("g"),
        expires_at: t("2026-05-20T17:00:00Z"),
        dns: vec![],
    }
}

fn portal_to_gateway() -> Vec<PortalToGateway> {
    vec![
        PortalToGateway::Init(GatewayInit {
            gateway_id: GatewayId::from_u128(4),
            site_id: SiteId::from_u128(2),
            tunnel_addresses: addrs(4),
            resources: vec![resource()],
            relays: vec![relay()],
        }),
        PortalToGateway::AuthorizeFlow(authorize_flow()),
        PortalToGateway::IceCandidates(client_candidates()),
        PortalToGateway::InvalidateIceCandidates(client_candidates()),
        PortalToGateway::Revoke(Revoke {
            target: RevokeTarget::Flow {
                flow_id: FlowId::from_u128(5),
            },
        }),
        PortalToGateway::Revoke(Revoke {
            target: RevokeTarget::Client {
                client_id: ClientId::from_u128(3),
            },
        }),
        PortalToGateway::Revoke(Revoke {
            target: RevokeTarget::Resource {
                resource_id: ResourceId::from_u128(1),
            },
        }),
        PortalToGateway::ResourceUpdated(ResourceChange {
            resource: resource(),
        }),
        PortalToGateway::ResourceDeleted(ResourceDeleted {
            resource_id: ResourceId::from_u128(1),
        }),
        PortalToGateway::RelaysPresence(presence()),
        PortalToGateway::Error(error()),
    ]
}

fn gateway_to_portal() -> Vec<GatewayToPortal> {
    vec![
        GatewayToPortal::FlowAuthorized(FlowAuthorized {
            flow_id: FlowId::from_u128(5),
        }),
        GatewayToPortal::IceCandidates(client_candidates()),
        GatewayToPortal::InvalidateIceCandidates(client_candidates()),
        GatewayToPortal::Heartbeat(GatewayHeartbeat {
            load: GatewayLoad {
                active_flows: 12,
                connected_clients: 3,
            },
        }),
    ]
}

fn flow_created() -> FlowCreated {
    FlowCreated {
        flow_id: FlowId::from_u128(5),
        resource_id: ResourceId::from_u128(1),
        gateway_id: GatewayId::from_u128(4),
        site_id: SiteId::from_u128(2),
        gateway_public_key: PublicKey::from_bytes([4; 32]),
        preshared_key: PresharedKey::from_bytes([2; 32]),
        gateway_tunnel_addresses: addrs(4),
        client_ice: ice("c"),
        gateway_ice: ice("g"),
        expires_at: t("2026-05-20T17:00:00Z"),
    }
}

fn portal_to_client() -> Vec<PortalToClient> {
    let mut resource_ip = resource();
    resource_ip.address = ResourceAddress::Ip {
        ip: "10.0.0.5".parse().unwrap(),
    };
    let mut resource_cidr = resource();
    resource_cidr.address = ResourceAddress::Cidr {
        cidr: "2001:db8::/32".parse().unwrap(),
    };
    let mut resource_internet = resource();
    resource_internet.address = ResourceAddress::Internet;
    resource_internet.filters.clear();
    vec![
        PortalToClient::Init(ClientInit {
            client_id: ClientId::from_u128(3),
            tunnel_addresses: addrs(3),
            resources: vec![resource(), resource_ip, resource_cidr, resource_internet],
            relays: vec![relay()],
        }),
        PortalToClient::FlowCreated(flow_created()),
        PortalToClient::FlowFailed(FlowFailed {
            resource_id: ResourceId::from_u128(1),
            reason: FlowFailReason::NoGatewayOnline,
        }),
        PortalToClient::IceCandidates(gateway_candidates()),
        PortalToClient::InvalidateIceCandidates(gateway_candidates()),
        PortalToClient::ResourceCreated(ResourceChange {
            resource: resource(),
        }),
        PortalToClient::ResourceUpdated(ResourceChange {
            resource: resource(),
        }),
        PortalToClient::ResourceDeleted(ResourceDeleted {
            resource_id: ResourceId::from_u128(1),
        }),
        PortalToClient::Revoked(Revoke {
            target: RevokeTarget::Resource {
                resource_id: ResourceId::from_u128(1),
            },
        }),
        PortalToClient::RelaysPresence(presence()),
        PortalToClient::GatewayOffline(GatewayOffline {
            gateway_id: GatewayId::from_u128(4),
        }),
        PortalToClient::Error(error()),
    ]
}

fn client_to_portal() -> Vec<ClientToPortal> {
    vec![
        ClientToPortal::RequestFlow(RequestFlow {
            resource_id: ResourceId::from_u128(1),
            connected_gateway_ids: vec![GatewayId::from_u128(4)],
            dns: vec![],
        }),
        ClientToPortal::IceCandidates(gateway_candidates()),
        ClientToPortal::InvalidateIceCandidates(gateway_candidates()),
    ]
}

fn relay_messages() -> (Vec<PortalToRelay>, Vec<RelayToPortal>) {
    (
        vec![
            PortalToRelay::Init(RelayInit {
                relay_id: RelayId::from_u128(9),
                turn_secret: TurnSecret::try_from("0123456789abcdef0123".to_owned()).unwrap(),
            }),
            PortalToRelay::Error(error()),
        ],
        vec![
            RelayToPortal::Register(RelayRegister {
                public_ipv4: Some("203.0.113.7".parse().unwrap()),
                public_ipv6: Some("2001:db8::7".parse().unwrap()),
                port: 3478,
                load: RelayLoad { allocations: 0 },
            }),
            RelayToPortal::Heartbeat(RelayHeartbeat {
                load: RelayLoad { allocations: 17 },
            }),
        ],
    )
}

/// Encode each message as a request, a reply and a notification, decode it
/// back, and check all types of the family were covered.
fn round_trip_all<M: Message + Clone + PartialEq + std::fmt::Debug>(msgs: Vec<M>) {
    let mut seen = BTreeSet::new();
    for (i, m) in msgs.into_iter().enumerate() {
        seen.insert(m.type_name());
        for env in [
            Envelope::new(m.clone()),
            Envelope::request(RequestId(i as u64), m.clone()),
            Envelope::reply(RequestId(u64::MAX - i as u64), m.clone()),
        ] {
            let text = env.encode().unwrap();
            match decode::<M>(text.as_bytes()) {
                Ok(Decoded::Known(back)) => assert_eq!(back, env, "{text}"),
                other => panic!("{text} decoded as {other:?}"),
            }
        }
    }
    let all: BTreeSet<_> = M::TYPES.iter().copied().collect();
    assert_eq!(seen, all, "a message type has no round-trip sample");
}

#[test]
fn every_message_round_trips() {
    round_trip_all(portal_to_gateway());
    round_trip_all(gateway_to_portal());
    round_trip_all(portal_to_client());
    round_trip_all(client_to_portal());
    let (to_relay, from_relay) = relay_messages();
    round_trip_all(to_relay);
    round_trip_all(from_relay);
}

fn assert_golden<M: Message + PartialEq + std::fmt::Debug>(env: Envelope<M>, golden: &str) {
    let golden: String = golden.split_whitespace().collect();
    let encoded = env.encode().unwrap();
    assert_eq!(encoded, golden);
    match decode::<M>(golden.as_bytes()).unwrap() {
        Decoded::Known(back) => assert_eq!(back, env),
        other => panic!("{other:?}"),
    }
}

#[test]
fn golden_request_flow() {
    assert_golden(
        Envelope::request(
            RequestId(7),
            ClientToPortal::RequestFlow(RequestFlow {
                resource_id: ResourceId::from_u128(1),
                connected_gateway_ids: vec![GatewayId::from_u128(4)],
                dns: vec![],
            }),
        ),
        r#"{"v":1,"type":"request_flow","id":7,"payload":{
            "resource_id":"00000000-0000-0000-0000-000000000001",
            "connected_gateway_ids":["00000000-0000-0000-0000-000000000004"]}}"#,
    );
}

#[test]
fn golden_flow_failed_reply() {
    assert_golden(
        Envelope::reply(
            RequestId(7),
            PortalToClient::FlowFailed(FlowFailed {
                resource_id: ResourceId::from_u128(1),
                reason: FlowFailReason::NotAllowed,
            }),
        ),
        r#"{"v":1,"type":"flow_failed","reply_to":7,"payload":{
            "resource_id":"00000000-0000-0000-0000-000000000001","reason":"not_allowed"}}"#,
    );
}

#[test]
fn golden_authorize_flow() {
    assert_golden(
        Envelope::request(
            RequestId(1),
            PortalToGateway::AuthorizeFlow(authorize_flow()),
        ),
        r#"{"v":1,"type":"authorize_flow","id":1,"payload":{
            "flow_id":"00000000-0000-0000-0000-000000000005",
            "client_id":"00000000-0000-0000-0000-000000000003",
            "client_public_key":"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=",
            "preshared_key":"AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=",
            "client_tunnel_addresses":{"ipv4":"100.64.0.3","ipv6":"fd00:1:2::3"},
            "resource":{"id":"00000000-0000-0000-0000-000000000001","name":"wiki",
                "address":{"kind":"dns","pattern":"**.wiki.corp"},
                "filters":[{"protocol":"tcp","ports":{"start":80,"end":443}},{"protocol":"icmp"}],
                "site_ids":["00000000-0000-0000-0000-000000000002"]},
            "client_ice":{"username":"cufrg","password":"cpppppppppppppppppppppp"},
            "gateway_ice":{"username":"gufrg","password":"gpppppppppppppppppppppp"},
            "expires_at":"2026-05-20T17:00:00Z"}}"#,
    );
}

#[test]
fn golden_revoke_and_heartbeat() {
    assert_golden(
        Envelope::new(PortalToGateway::Revoke(Revoke {
            target: RevokeTarget::Client {
                client_id: ClientId::from_u128(3),
            },
        })),
        r#"{"v":1,"type":"revoke","payload":{"target":{"kind":"client",
            "client_id":"00000000-0000-0000-0000-000000000003"}}}"#,
    );
    assert_golden(
        Envelope::new(GatewayToPortal::Heartbeat(GatewayHeartbeat {
            load: GatewayLoad {
                active_flows: 2,
                connected_clients: 1,
            },
        })),
        r#"{"v":1,"type":"heartbeat","payload":{"load":{"active_flows":2,"connected_clients":1}}}"#,
    );
}

#[test]
fn golden_gateway_offline() {
    assert_golden(
        Envelope::new(PortalToClient::GatewayOffline(GatewayOffline {
            gateway_id: GatewayId::from_u128(4),
        })),
        r#"{"v":1,"type":"gateway_offline","payload":{
            "gateway_id":"00000000-0000-0000-0000-000000000004"}}"#,
    );
}

#[test]
fn unknown_types_are_reported_not_errors() {
    let frame = br#"{"v":1,"type":"shiny_new_thing","id":3,"payload":{"x":[1,2]},"extra":true}"#;
    assert_eq!(
        decode::<ClientToPortal>(frame).unwrap(),
        Decoded::Unknown {
            type_name: "shiny_new_thing".into(),
            id: Some(RequestId(3)),
        }
    );
    // A type known in one direction is unknown in another.
    assert!(matches!(
        decode::<ClientToPortal>(br#"{"v":1,"type":"flow_created","payload":{}}"#).unwrap(),
        Decoded::Unknown { .. }
    ));
}

#[test]
fn unknown_fields_and_enum_values_are_tolerated() {
    let frame = br#"{"v":1,"type":"flow_failed","reply_to":2,"trace":"abc","payload":{
        "resource_id":"00000000-0000-0000-0000-000000000001","reason":"quota_exceeded","hint":1}}"#;
    match decode::<PortalToClient>(frame).unwrap() {
        Decoded::Known(Envelope {
            message: PortalToClient::FlowFailed(f),
            reply_to: Some(RequestId(2)),
            ..
        }) => assert_eq!(f.reason, FlowFailReason::Unknown),
        other => panic!("{other:?}"),
    }
}

fn payload_error(frame: &str) -> (String, String, Option<RequestId>) {
    match decode::<PortalToGateway>(frame.as_bytes()) {
        Err(DecodeError::Payload {
            type_name,
            id,
            source,
        }) => {
            let e = DecodeError::Payload {
                type_name: type_name.clone(),
                id,
                source: source.clone(),
            };
            assert_eq!(e.close_code(), None);
            (
                type_name,
                format!("{} :: {}", source.path, source.message),
                id,
            )
        }
        other => panic!("{frame} gave {other:?}"),
    }
}

#[test]
fn malformed_known_messages_name_the_field() {
    let ok = PortalToGateway::AuthorizeFlow(authorize_flow());
    let good = Envelope::request(RequestId(9), ok).encode().unwrap();

    let missing = good.replace(r#""flow_id":"00000000-0000-0000-0000-000000000005","#, "");
    let (ty, msg, id) = payload_error(&missing);
    assert_eq!(ty, "authorize_flow");
    assert_eq!(id, Some(RequestId(9)));
    assert!(msg.contains("missing field `flow_id`"), "{msg}");

    let bad_key = good.replace("AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=", "AQEB");
    let (_, msg, _) = payload_error(&bad_key);
    assert!(msg.starts_with("client_public_key ::"), "{msg}");
    assert!(msg.contains("32 bytes"), "{msg}");

    let bad_ports = good.replace(r#""start":80"#, r#""start":500"#);
    let (_, msg, _) = payload_error(&bad_ports);
    assert!(msg.starts_with("resource.filters[0]"), "{msg}");
    assert!(msg.contains("after its end"), "{msg}");

    let bad_ip = good.replace("100.64.0.3", "192.168.0.3");
    let (_, msg, _) = payload_error(&bad_ip);
    assert!(msg.starts_with("client_tunnel_addresses"), "{msg}");

    let bad_time = good.replace("2026-05-20T17:00:00Z", "tomorrow");
    let (_, msg, _) = payload_error(&bad_time);
    assert!(msg.starts_with("expires_at"), "{msg}");

    let not_object = r#"{"v":1,"type":"revoke","payload":[1,2,3]}"#;
    let (ty, _, _) = payload_error(not_object);
    assert_eq!(ty, "revoke");
}

#[test]
fn bad_envelopes_close_with_the_right_code() {
    for frame in [
        &b"not json"[..],
        b"",
        b"[]",
        b"{}",
        br#"{"v":1}"#,
        br#"{"type":"init"}"#,
        br#"{"v":"1","type":"init"}"#,
        br#"{"v":1,"type":7}"#,
        br#"{"v":1,"type":"init","id":-1}"#,
        br#"{"v":1,"type":"init","payload":{}"#,
        b"\xff\xfe",
    ] {
        let err = decode::<PortalToGateway>(frame).unwrap_err();
        assert!(
            matches!(err, DecodeError::Envelope(_)),
            "{frame:?}: {err:?}"
        );
        assert_eq!(err.close_code(), Some(CLOSE_PROTOCOL_ERROR));
    }
    let err = decode::<PortalToGateway>(br#"{"v":2,"type":"init","payload":{}}"#).unwrap_err();
    assert_eq!(err, DecodeError::UnsupportedVersion(2));
    assert_eq!(err.close_code(), Some(CLOSE_PROTOCOL_ERROR));
}

#[test]
fn oversized_frames_are_refused_before_parsing() {
    let mut frame = br#"{"v":1,"type":"heartbeat","payload":{"load":{"active_flows":1,"connected_clients":1}},"pad":""#.to_vec();
    frame.resize(MAX_FRAME_BYTES, b' ');
    frame.extend_from_slice(b"\"}");
    let err = decode::<GatewayToPortal>(&frame).unwrap_err();
    assert_eq!(
        err,
        DecodeError::TooLarge {
            len: MAX_FRAME_BYTES + 2,
            max: MAX_FRAME_BYTES
        }
    );
    assert_eq!(err.close_code(), Some(CLOSE_MESSAGE_TOO_BIG));
    // Exactly at the limit is fine.
    frame.truncate(MAX_FRAME_BYTES - 2);
    frame.extend_from_slice(b"\"}");
    assert!(matches!(
        decode::<GatewayToPortal>(&frame).unwrap(),
        Decoded::Known(_)
    ));
}

#[test]
fn secrets_stay_out_of_debug_output() {
    let dbg = format!("{:?}", PortalToGateway::AuthorizeFlow(authorize_flow()));
    let psk = PresharedKey::from_bytes([2; 32]).expose_base64();
    assert!(!dbg.contains(&psk), "{dbg}");
    assert!(!dbg.contains("pppppppppppp"), "{dbg}");
    let (to_relay, _) = relay_messages();
    assert!(!format!("{to_relay:?}").contains("0123456789abcdef"));
}

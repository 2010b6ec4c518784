//! Matching a parsed packet against a trie entry's rules. Shared by the eBPF
//! program and host unit tests, so it is written for the verifier: a
//! constant-bounded loop, no recursion, no panics.

use super::{MAX_RULES, PROTO_ANY, PROTO_ICMP, RuleSet, Verdict};

/// What the filter knows about a packet's transport layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// TCP or UDP (`proto` is 6 or 17) with its destination port.
    Port { proto: u8, port: u16 },
    /// ICMP echo request (ICMPv4 type 8, ICMPv6 type 128).
    IcmpEcho,
    /// Any other ICMP or ICMPv6 message.
    IcmpOther,
    /// A non-first fragment: only the protocol is known, as a rule protocol
    /// (ICMP and ICMPv6 both as [`PROTO_ICMP`]).
    Fragment { proto: u8 },
    /// Any other protocol; only an `any` rule admits it.
    Other,
}

/// The verdict for a packet whose (client, destination) found `set`, and the
/// counter slot of the first (most specific) rule that admitted it.
#[inline(always)]
pub fn decide(set: &RuleSet, transport: Transport) -> (Verdict, Option<u32>) {
    let len = set.len as usize;
    let mut i = 0;
    while i < MAX_RULES {
        if i >= len {
            break;
        }
        let rule = &set.rules[i];
        let hit = rule.proto == PROTO_ANY
            || match transport {
                Transport::Port { proto, port } => {
                    rule.proto == proto && rule.port_lo <= port && port <= rule.port_hi
                }
                Transport::IcmpEcho => rule.proto == PROTO_ICMP,
                Transport::Fragment { proto } => rule.proto == proto,
                Transport::IcmpOther | Transport::Other => false,
            };
        if hit {
            let verdict = match transport {
                Transport::Fragment { .. } => Verdict::AllowedFragment,
                _ => Verdict::Allowed,
            };
            return (verdict, Some(rule.slot));
        }
        i += 1;
    }
    match transport {
        Transport::IcmpOther => (Verdict::DeniedIcmpType, None),
        _ => (Verdict::DeniedPortOrProto, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{PROTO_TCP, PROTO_UDP, Rule};

    fn rule(slot: u32, proto: u8, lo: u16, hi: u16) -> Rule {
        Rule {
            slot,
            port_lo: lo,
            port_hi: hi,
            proto,
            _pad: [0; 3],
        }
    }

    fn set(rules: &[Rule]) -> RuleSet {
        let mut s = RuleSet {
            len: rules.len() as u32,
            ..Default::default()
        };
        s.rules[..rules.len()].copy_from_slice(rules);
        s
    }

    #[test]
    fn port_range_is_inclusive() {
        let s = set(&[rule(7, PROTO_TCP, 8000, 8010)]);
        for (port, ok) in [(7999, false), (8000, true), (8010, true), (8011, false)] {
            let got = decide(
                &s,
                Transport::Port {
                    proto: PROTO_TCP,
                    port,
                },
            );
            let want = if ok {
                (Verdict::Allowed, Some(7))
            } else {
                (Verdict::DeniedPortOrProto, None)
            };
            assert_eq!(got, want, "port {port}");
        }
    }

    #[test]
    fn protocol_must_match() {
        let s = set(&[rule(1, PROTO_UDP, 53, 53)]);
        let tcp = Transport::Port {
            proto: PROTO_TCP,
            port: 53,
        };
        assert_eq!(decide(&s, tcp), (Verdict::DeniedPortOrProto, None));
        assert_eq!(
            decide(&s, Transport::IcmpEcho),
            (Verdict::DeniedPortOrProto, None)
        );
    }

    #[test]
    fn icmp_rule_admits_only_echo_requests() {
        let s = set(&[rule(3, PROTO_ICMP, 0, 0)]);
        assert_eq!(decide(&s, Transport::IcmpEcho), (Verdict::Allowed, Some(3)));
        assert_eq!(
            decide(&s, Transport::IcmpOther),
            (Verdict::DeniedIcmpType, None)
        );
    }

    #[test]
    fn any_admits_everything() {
        let s = set(&[rule(9, PROTO_ANY, 0, 0)]);
        for t in [
            Transport::Port {
                proto: PROTO_UDP,
                port: 1,
            },
            Transport::IcmpEcho,
            Transport::IcmpOther,
            Transport::Other,
        ] {
            assert_eq!(decide(&s, t), (Verdict::Allowed, Some(9)), "{t:?}");
        }
        assert_eq!(
            decide(&s, Transport::Fragment { proto: PROTO_TCP }),
            (Verdict::AllowedFragment, Some(9))
        );
    }

    #[test]
    fn fragments_match_protocol_only() {
        let s = set(&[rule(2, PROTO_TCP, 80, 80)]);
        assert_eq!(
            decide(&s, Transport::Fragment { proto: PROTO_TCP }),
            (Verdict::AllowedFragment, Some(2))
        );
        assert_eq!(
            decide(&s, Transport::Fragment { proto: PROTO_UDP }),
            (Verdict::DeniedPortOrProto, None)
        );
    }

    #[test]
    fn first_matching_rule_wins_and_len_bounds_the_scan() {
        let mut s = set(&[rule(1, PROTO_TCP, 80, 80), rule(2, PROTO_TCP, 1, 65535)]);
        let t = Transport::Port {
            proto: PROTO_TCP,
            port: 80,
        };
        assert_eq!(decide(&s, t), (Verdict::Allowed, Some(1)));
        // A stale rule past `len` is ignored.
        s.len = 0;
        assert_eq!(decide(&s, t), (Verdict::DeniedPortOrProto, None));
    }

    #[test]
    fn a_full_set_is_scanned_to_the_end() {
        let mut rules = [rule(0, PROTO_UDP, 1, 1); MAX_RULES];
        rules[MAX_RULES - 1] = rule(99, PROTO_TCP, 443, 443);
        let s = set(&rules);
        let t = Transport::Port {
            proto: PROTO_TCP,
            port: 443,
        };
        assert_eq!(decide(&s, t), (Verdict::Allowed, Some(99)));
    }
}

//! What each benchmark's rows are and the goal each row carries, from the
//! issue that set it. Samples of a metric not listed here still appear in
//! the report, under their benchmark, without a goal.

/// A benchmark's section in the report.
pub struct Bench {
    pub id: &'static str,
    pub title: &'static str,
    /// How the anchor is chosen and what the numbers mean.
    pub about: &'static str,
    pub rows: &'static [Row],
}

/// One metric of a benchmark: a table row per variant.
pub struct Row {
    pub metric: &'static str,
    pub title: &'static str,
    /// The variant every other variant is divided by in the "× anchor"
    /// column (same metric, same run).
    pub anchor: Option<&'static str>,
    pub goals: &'static [Goal],
    /// Whether the report draws a chart of this metric.
    pub chart: bool,
}

pub struct Goal {
    /// The variant the goal is about.
    pub variant: &'static str,
    pub kind: GoalKind,
    /// The issue that set it.
    pub issue: u32,
}

#[derive(Clone, Copy, Debug)]
pub enum GoalKind {
    /// median(variant) / median(of) ≥ ratio.
    RatioAtLeast { of: &'static str, ratio: f64 },
    /// median(variant) ≥ value.
    AtLeast(f64),
    /// median(variant) ≤ value.
    AtMost(f64),
}

impl Goal {
    pub fn text(&self, unit: &str) -> String {
        let what = match self.kind {
            GoalKind::RatioAtLeast { of, ratio } if ratio < 1.0 => {
                format!(
                    "≥ {ratio:.2} × {of} (≤ {:.0} % loss)",
                    (1.0 - ratio) * 100.0
                )
            }
            GoalKind::RatioAtLeast { of, ratio } => format!("≥ {ratio} × {of}"),
            GoalKind::AtLeast(v) => format!("≥ {} {unit}", number(v)),
            GoalKind::AtMost(v) => format!("≤ {} {unit}", number(v)),
        };
        format!("{what} (#{})", self.issue)
    }

    /// Whether the goal is met, given the medians of its row; None when a
    /// median it needs is missing.
    pub fn met(&self, median: impl Fn(&str) -> Option<f64>) -> Option<bool> {
        let v = median(self.variant)?;
        Some(match self.kind {
            GoalKind::RatioAtLeast { of, ratio } => v / median(of)? >= ratio,
            GoalKind::AtLeast(x) => v >= x,
            GoalKind::AtMost(x) => v <= x,
        })
    }
}

/// A figure with a sensible number of digits.
pub fn number(v: f64) -> String {
    let a = v.abs();
    if !v.is_finite() {
        "–".into()
    } else if a >= 10_000.0 {
        // Thousands separated for readability.
        let s = format!("{:.0}", v.abs());
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        if v < 0.0 { format!("-{out}") } else { out }
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

const fn row(metric: &'static str, title: &'static str) -> Row {
    Row {
        metric,
        title,
        anchor: None,
        goals: &[],
        chart: false,
    }
}

const TUNNEL_GOALS: &[Goal] = &[
    Goal {
        variant: "keyhole",
        kind: GoalKind::RatioAtLeast {
            of: "wireguard-go",
            ratio: 3.0,
        },
        issue: 4,
    },
    Goal {
        variant: "keyhole",
        kind: GoalKind::RatioAtLeast {
            of: "boringtun-cli",
            ratio: 2.0,
        },
        issue: 4,
    },
];

/// #5: XDP ≥ 10× coturn, userspace ≥ coturn.
const RELAY_GOALS: &[Goal] = &[
    Goal {
        variant: "keyhole-relay XDP",
        kind: GoalKind::RatioAtLeast {
            of: "coturn turnserver",
            ratio: 10.0,
        },
        issue: 5,
    },
    Goal {
        variant: "keyhole-relay userspace",
        kind: GoalKind::RatioAtLeast {
            of: "coturn turnserver",
            ratio: 1.0,
        },
        issue: 5,
    },
];

const FILTER_GOAL: &[Goal] = &[Goal {
    variant: "100000 authorisations",
    kind: GoalKind::RatioAtLeast {
        of: "no filter",
        ratio: 0.97,
    },
    issue: 6,
}];

pub const BENCHES: &[Bench] = &[
    Bench {
        id: "tunnel",
        title: "Tunnel throughput",
        about: "iperf3 TCP between two network namespaces joined by one veth pair, \
                through each tunnel in turn (libs/keyhole-tunnel/bench/netns-iperf.sh); \
                every repeat runs every variant once, interleaved. bare-veth is the \
                ceiling without a tunnel.",
        rows: &[
            Row {
                anchor: Some("wireguard-go"),
                goals: TUNNEL_GOALS,
                chart: true,
                ..row("tcp_gbps_1", "TCP, 1 stream")
            },
            Row {
                anchor: Some("wireguard-go"),
                goals: TUNNEL_GOALS,
                chart: true,
                ..row("tcp_gbps_4", "TCP, 4 streams")
            },
            Row {
                anchor: Some("wireguard-go"),
                ..row(
                    "cpu_s_per_gb_1",
                    "CPU seconds of both tunnel processes per GB, 1 stream",
                )
            },
            Row {
                anchor: Some("wireguard-go"),
                ..row(
                    "cpu_s_per_gb_4",
                    "CPU seconds of both tunnel processes per GB, 4 streams",
                )
            },
        ],
    },
    Bench {
        id: "relay",
        title: "Relay: ChannelData packets/s",
        about: "Two TURN clients' 1200-byte ChannelData, generated by the kernel's \
                live-frame XDP generator, reach the relay's veth as a NIC's frames would; \
                the peer counts and drops with XDP (relay/benches/relay_throughput.rs). \
                Relay on CPU 1; load and sink on CPU 0, which also runs a userspace \
                relay's socket receive path (the fast path's receive runs on CPU 1), so \
                the XDP ratios are conservative. The generator offers more than any \
                relay takes, so the relay's core is the limit. Keyhole's userspace path \
                uses UDP GSO/GRO, which these equal-size datagrams suit best; coturn \
                does not. Rounds interleave the variants.",
        rows: &[
            Row {
                anchor: Some("coturn turnserver"),
                goals: RELAY_GOALS,
                chart: true,
                ..row("pps", "Relayed packets/s")
            },
            Row {
                anchor: Some("coturn turnserver"),
                ..row("mbps", "Relayed payload Mbit/s")
            },
            Row {
                anchor: Some("coturn turnserver"),
                goals: RELAY_GOALS,
                ..row("pps_per_cpu", "Packets per relay CPU-second")
            },
        ],
    },
    Bench {
        id: "filter",
        title: "eBPF policy filter cost",
        about: "Forwarding through the gateway namespace with the filter on the \
                ingress of an L3 TUN, holding 100,000 authorisations, vs no filter \
                (tests-netns/examples/filter_cost.rs); rounds alternate. ns/packet \
                is the kernel's own bpf_stats accounting of the program.",
        rows: &[
            Row {
                anchor: Some("no filter"),
                goals: FILTER_GOAL,
                chart: true,
                ..row("tcp_gbps", "TCP through the gateway")
            },
            Row {
                anchor: Some("no filter"),
                goals: FILTER_GOAL,
                chart: true,
                ..row("udp64_pps", "UDP 64-byte packets/s through the gateway")
            },
            row("ns_per_packet", "Filter run time per packet"),
        ],
    },
    Bench {
        id: "portal",
        title: "Portal: flow authorisations",
        about: "Flow authorisations end to end over real WebSockets: clients request \
                flows, two gateways confirm each (portal/examples/authz_bench); the \
                portal in its own process on SQLite. Fixed-rate latency is measured \
                from the scheduled send time.",
        rows: &[
            Row {
                goals: &[Goal {
                    variant: "portal on SQLite",
                    kind: GoalKind::AtLeast(20_000.0),
                    issue: 3,
                }],
                chart: true,
                ..row("closed_loop_rate", "Maximum rate (closed loop)")
            },
            Row {
                goals: &[Goal {
                    variant: "portal on SQLite",
                    kind: GoalKind::AtMost(10.0),
                    issue: 3,
                }],
                chart: true,
                ..row("p99_ms_at_20000", "p99 latency at 20,000/s offered")
            },
            row("answered_at_20000", "Answered at 20,000/s offered"),
            Row {
                goals: &[Goal {
                    variant: "portal on SQLite",
                    kind: GoalKind::AtMost(1024.0),
                    issue: 3,
                }],
                ..row(
                    "rss_mib_idle_10000",
                    "Portal RSS with 10,000 idle connected clients",
                )
            },
        ],
    },
    Bench {
        id: "flow_setup",
        title: "First packet of a new flow",
        about: "A client's first packet to a resource it never used, until its \
                answer: flow request, authorisation, ICE and the WireGuard \
                handshake (tests-netns/examples/flow_bench.rs). The anchor is \
                the round trip over the same tunnel once it is up.",
        rows: &[
            Row {
                chart: true,
                ..row("first_packet_ms", "First packet answered")
            },
            row(
                "new_flow_ms",
                "First packet of another resource over the same tunnel",
            ),
            row("steady_rtt_ms", "Round trip once established"),
        ],
    },
    Bench {
        id: "failover",
        title: "Gateway failover",
        about: "Two gateways in one site; the one in use is SIGKILLed mid-traffic; \
                the gap until probes are answered through the other \
                (tests-netns/examples/flow_bench.rs).",
        rows: &[Row {
            goals: &[Goal {
                variant: "keyhole",
                kind: GoalKind::AtMost(2000.0),
                issue: 9,
            }],
            chart: true,
            ..row("failover_ms", "Traffic gap after the gateway dies")
        }],
    },
    Bench {
        id: "vm_backend",
        title: "Kernel vs userspace gateway backend (VM)",
        about: "Inside a qemu VM (TCG emulation, 1 vCPU: absolute figures are far \
                below real hardware; the ratio is what counts) with Debian's kernel \
                WireGuard: the gateway with --backend kernel vs its userspace \
                backend, same VM, interleaved rounds (cargo xtask vm-test backend-throughput).",
        rows: &[
            Row {
                anchor: Some("userspace"),
                chart: true,
                ..row("tcp_mbps", "TCP through the gateway")
            },
            Row {
                anchor: Some("userspace"),
                chart: true,
                ..row("udp64_pps", "UDP 64-byte packets/s through the gateway")
            },
            Row {
                anchor: Some("kernel-no-filter"),
                goals: &[Goal {
                    variant: "kernel-filter-100k",
                    kind: GoalKind::RatioAtLeast {
                        of: "kernel-no-filter",
                        ratio: 0.97,
                    },
                    issue: 6,
                }],
                chart: true,
                ..row("filter_tcp_mbps", "Filter cost next to kernel WireGuard")
            },
        ],
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goals_are_judged_on_medians() {
        let g = &TUNNEL_GOALS[0];
        let med = |keyhole: f64| {
            move |v: &str| match v {
                "keyhole" => Some(keyhole),
                "wireguard-go" => Some(1.0),
                _ => None,
            }
        };
        assert_eq!(g.met(med(3.1)), Some(true));
        assert_eq!(g.met(med(2.9)), Some(false));
        // boringtun-cli did not run: no verdict.
        assert_eq!(TUNNEL_GOALS[1].met(med(9.0)), None);
        let loss = FILTER_GOAL[0].text("Gbit/s");
        assert_eq!(loss, "≥ 0.97 × no filter (≤ 3 % loss) (#6)");
        assert_eq!(number(20_000.0), "20,000");
        assert_eq!(number(1_234_567.0), "1,234,567");
        assert_eq!(number(1.23456), "1.23");
    }
}

//! The IO shell of DNS resources: hickory-resolver lookups turned into
//! [`Answer`]s for the [`DnsTable`](super::DnsTable).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{LookupIpStrategy, NameServerConfigGroup, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;

use super::Answer;

/// How long an empty answer (NXDOMAIN, no A/AAAA) is trusted.
const NEGATIVE_TTL: Duration = Duration::from_secs(30);

/// A resolver for the names clients were given proxy IPs for.
#[derive(Clone)]
pub struct Resolver {
    inner: TokioResolver,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver").finish_non_exhaustive()
    }
}

impl Resolver {
    /// The system's resolver configuration (`/etc/resolv.conf`), or only
    /// `servers` (plain UDP/TCP) when given.
    pub fn new(servers: &[SocketAddr]) -> Result<Self, hickory_resolver::ResolveError> {
        let mut builder = if servers.is_empty() {
            TokioResolver::builder_tokio()?
        } else {
            let mut group = NameServerConfigGroup::new();
            for s in servers {
                group.merge(NameServerConfigGroup::from_ips_clear(
                    &[s.ip()],
                    s.port(),
                    true,
                ));
            }
            TokioResolver::builder_with_config(
                ResolverConfig::from_parts(None, Vec::new(), group),
                TokioConnectionProvider::default(),
            )
        };
        let opts = builder.options_mut();
        // Both families: a proxy IP of each family needs its own answer.
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        opts.timeout = Duration::from_secs(3);
        opts.attempts = 2;
        Ok(Self {
            inner: builder.build(),
        })
    }

    /// Looks up A and AAAA of `name` (absolute: no search domains).
    /// `Err` is a failed lookup (timeout, SERVFAIL); a name with no
    /// addresses is an empty answer.
    pub async fn lookup(&self, name: &str) -> Result<Answer, String> {
        let fqdn = format!("{}.", name.trim_end_matches('.'));
        match self.inner.lookup_ip(fqdn.as_str()).await {
            Ok(ips) => Ok(Answer {
                addresses: ips.iter().collect(),
                ttl: ips.valid_until().saturating_duration_since(Instant::now()),
            }),
            Err(e) if e.is_no_records_found() || e.is_nx_domain() => Ok(Answer {
                addresses: Vec::new(),
                ttl: NEGATIVE_TTL,
            }),
            Err(e) => Err(e.to_string()),
        }
    }
}

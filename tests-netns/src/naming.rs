//! Unique names for namespaces and anything else tests create.

use std::sync::atomic::{AtomicU64, Ordering};

/// Prefix of every namespace the harness creates.
pub(crate) const NS_PREFIX: &str = "kh-";

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// `<pid>-<n>`: unique within this machine while this process lives
/// (the counter is per process, the pid tells processes apart).
pub fn unique_suffix() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// `<prefix>-<pid>-<n>`, e.g. for nft tables, temp files or database names.
/// Too long for an interface name (15 bytes); interfaces live in their own
/// namespace and need no unique names.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}", unique_suffix())
}

/// `kh-<pid>-<n>-<tag>`, with the tag reduced to `[A-Za-z0-9_-]{0,32}`.
pub(crate) fn netns_name(tag: &str) -> String {
    let tag: String = tag
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(32)
        .collect();
    format!("{NS_PREFIX}{}-{tag}", unique_suffix())
}

/// The creating pid encoded in a harness namespace name, if it is one.
pub(crate) fn owner_pid(name: &str) -> Option<u32> {
    name.strip_prefix(NS_PREFIX)?
        .split('-')
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_parse_back() {
        let a = netns_name("client/1 x");
        let b = netns_name("client/1 x");
        assert_ne!(a, b);
        assert!(a.ends_with("-client_1_x"), "{a}");
        assert_eq!(owner_pid(&a), Some(std::process::id()));
        assert_eq!(owner_pid("kh-notapid-1-x"), None);
        assert_eq!(owner_pid("other-12-1-x"), None);
    }
}

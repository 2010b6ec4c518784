//! DNS resource patterns.
//!
//! Three forms, Firezone-like:
//! - `app.example.com`: exactly that name;
//! - `*.example.com`: exactly one more label (`a.example.com`), neither the
//!   apex `example.com` nor `a.b.example.com`;
//! - `**.example.com`: any depth, including zero: `example.com`,
//!   `a.example.com`, `a.b.example.com`.
//!
//! Patterns and names compare case-insensitively and without the trailing
//! root dot; the stored form is lowercase without it. Labels are 1–63
//! characters of `a-z 0-9 - _` (internationalised names travel as `xn--`
//! punycode), not starting or ending with `-`; the whole name is at most 253
//! characters. A wildcard is allowed only as the entire first label.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const MAX_NAME_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;

/// Why a DNS pattern was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsPatternError {
    #[error("DNS pattern is empty")]
    Empty,
    #[error("DNS pattern is {0} characters long, the limit is {MAX_NAME_LEN}")]
    TooLong(usize),
    #[error("DNS pattern has an empty label")]
    EmptyLabel,
    #[error("DNS label `{0}` is longer than {MAX_LABEL_LEN} characters")]
    LabelTooLong(String),
    #[error("DNS label `{label}` contains `{ch}`; allowed are a-z, 0-9, `-` and `_`")]
    InvalidChar { label: String, ch: char },
    #[error("DNS label `{0}` starts or ends with `-`")]
    HyphenAtEdge(String),
    #[error("a wildcard (`*` or `**`) is only allowed as the whole first label")]
    MisplacedWildcard,
    #[error("a wildcard needs a domain after it, like `*.example.com`")]
    WildcardWithoutBase,
}

/// How much of the name a pattern covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DnsPatternKind {
    /// `name`
    Exact,
    /// `*.base`: exactly one label below `base`.
    OneLabel,
    /// `**.base`: `base` and anything below it.
    AnyDepth,
}

/// A validated DNS resource pattern; see the module docs for the syntax.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct DnsPattern {
    kind: DnsPatternKind,
    /// Lowercase, no trailing dot, no wildcard label.
    base: String,
}

impl DnsPattern {
    pub fn parse(input: &str) -> Result<Self, DnsPatternError> {
        let s = input.strip_suffix('.').unwrap_or(input);
        if s.is_empty() {
            return Err(DnsPatternError::Empty);
        }
        if s.len() > MAX_NAME_LEN {
            return Err(DnsPatternError::TooLong(s.len()));
        }
        let (kind, base) = if let Some(rest) = s.strip_prefix("**.") {
            (DnsPatternKind::AnyDepth, rest)
        } else if let Some(rest) = s.strip_prefix("*.") {
            (DnsPatternKind::OneLabel, rest)
        } else if s == "*" || s == "**" {
            return Err(DnsPatternError::WildcardWithoutBase);
        } else {
            (DnsPatternKind::Exact, s)
        };
        if base.is_empty() {
            return Err(DnsPatternError::WildcardWithoutBase);
        }
        for label in base.split('.') {
            validate_label(label)?;
        }
        Ok(Self {
            kind,
            base: base.to_ascii_lowercase(),
        })
    }

    pub fn kind(&self) -> DnsPatternKind {
        self.kind
    }

    /// The domain the pattern is anchored at (the whole name for exact
    /// patterns).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Whether `name` (a query name, with or without the trailing dot, any
    /// case) is covered by this pattern.
    pub fn matches(&self, name: &str) -> bool {
        let name = name.strip_suffix('.').unwrap_or(name);
        if name.len() > MAX_NAME_LEN {
            return false;
        }
        if name.eq_ignore_ascii_case(&self.base) {
            return matches!(self.kind, DnsPatternKind::Exact | DnsPatternKind::AnyDepth);
        }
        // Below the base: `<prefix>.<base>` with a well-formed prefix.
        let Some(prefix_len) = name.len().checked_sub(self.base.len() + 1) else {
            return false;
        };
        if !name.is_char_boundary(prefix_len)
            || name.as_bytes()[prefix_len] != b'.'
            || !name[prefix_len + 1..].eq_ignore_ascii_case(&self.base)
        {
            return false;
        }
        let prefix = &name[..prefix_len];
        // Only well-formed labels below the base: a name that could never
        // be a valid pattern does not match one either.
        if prefix.split('.').any(|l| validate_label(l).is_err()) {
            return false;
        }
        match self.kind {
            DnsPatternKind::Exact => false,
            DnsPatternKind::OneLabel => !prefix.contains('.'),
            DnsPatternKind::AnyDepth => true,
        }
    }
}

fn validate_label(label: &str) -> Result<(), DnsPatternError> {
    if label.is_empty() {
        return Err(DnsPatternError::EmptyLabel);
    }
    if label == "*" || label == "**" {
        return Err(DnsPatternError::MisplacedWildcard);
    }
    if label.len() > MAX_LABEL_LEN {
        return Err(DnsPatternError::LabelTooLong(label.to_owned()));
    }
    if let Some(ch) = label
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        if ch == '*' {
            return Err(DnsPatternError::MisplacedWildcard);
        }
        return Err(DnsPatternError::InvalidChar {
            label: label.to_owned(),
            ch,
        });
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(DnsPatternError::HyphenAtEdge(label.to_owned()));
    }
    Ok(())
}

impl fmt::Display for DnsPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            DnsPatternKind::Exact => f.write_str(&self.base),
            DnsPatternKind::OneLabel => write!(f, "*.{}", self.base),
            DnsPatternKind::AnyDepth => write!(f, "**.{}", self.base),
        }
    }
}

impl fmt::Debug for DnsPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DnsPattern({self})")
    }
}

impl FromStr for DnsPattern {
    type Err = DnsPatternError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for DnsPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DnsPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> DnsPattern {
        DnsPattern::parse(s).unwrap()
    }

    #[test]
    fn exact_matches_only_itself_case_insensitively() {
        let pat = p("App.Example.com.");
        assert_eq!(pat.to_string(), "app.example.com");
        assert!(pat.matches("app.example.com"));
        assert!(pat.matches("APP.example.COM."));
        assert!(!pat.matches("x.app.example.com"));
        assert!(!pat.matches("example.com"));
        assert!(!pat.matches("pp.example.com"));
        assert!(!pat.matches("app.example.co"));
    }

    #[test]
    fn single_star_is_exactly_one_label() {
        let pat = p("*.example.com");
        assert_eq!(pat.kind(), DnsPatternKind::OneLabel);
        assert!(pat.matches("a.example.com"));
        assert!(pat.matches("Very-Long_label.example.com."));
        assert!(!pat.matches("example.com"));
        assert!(!pat.matches("a.b.example.com"));
        assert!(!pat.matches(".example.com"));
        assert!(!pat.matches("aexample.com"));
        assert!(!pat.matches("a.example.com.evil"));
    }

    #[test]
    fn double_star_is_any_depth_including_apex() {
        let pat = p("**.example.com");
        assert_eq!(pat.kind(), DnsPatternKind::AnyDepth);
        assert!(pat.matches("example.com"));
        assert!(pat.matches("a.example.com"));
        assert!(pat.matches("a.b.c.example.com"));
        assert!(!pat.matches("badexample.com"));
        assert!(!pat.matches("a..example.com"));
        assert!(!pat.matches("com"));
    }

    #[test]
    fn non_ascii_names_never_match_or_panic() {
        let pat = p("*.example.com");
        assert!(!pat.matches("é.example.com"));
        // The split point falls inside a multi-byte character.
        assert!(!p("*.b").matches("éb"));
        assert!(!p("**.b").matches("\u{e9}b"));
        assert!(!pat.matches("ü.xample.com"));
        assert!(!pat.matches("€xample.com"));
        assert!(!p("**.b").matches("ééé"));
    }

    #[test]
    fn invalid_patterns_are_rejected_with_the_reason() {
        use DnsPatternError as E;
        assert_eq!(DnsPattern::parse(""), Err(E::Empty));
        assert_eq!(DnsPattern::parse("."), Err(E::Empty));
        assert_eq!(DnsPattern::parse("*"), Err(E::WildcardWithoutBase));
        assert_eq!(DnsPattern::parse("**."), Err(E::WildcardWithoutBase));
        assert_eq!(DnsPattern::parse("a.*.com"), Err(E::MisplacedWildcard));
        assert_eq!(DnsPattern::parse("a*.com"), Err(E::MisplacedWildcard));
        assert_eq!(DnsPattern::parse("*.*.com"), Err(E::MisplacedWildcard));
        assert_eq!(DnsPattern::parse("a..com"), Err(E::EmptyLabel));
        assert_eq!(
            DnsPattern::parse("-a.com"),
            Err(E::HyphenAtEdge("-a".into()))
        );
        assert!(matches!(
            DnsPattern::parse("a b.com"),
            Err(E::InvalidChar { ch: ' ', .. })
        ));
        assert!(matches!(
            DnsPattern::parse("bücher.de"),
            Err(E::InvalidChar { ch: 'ü', .. })
        ));
        assert!(matches!(
            DnsPattern::parse(&format!("{}.com", "a".repeat(64))),
            Err(E::LabelTooLong(_))
        ));
        let long = vec!["abcdefghi"; 30].join(".");
        assert_eq!(DnsPattern::parse(&long), Err(E::TooLong(299)));
    }

    #[test]
    fn serde_validates() {
        let pat: DnsPattern = serde_json::from_str("\"**.Corp.internal\"").unwrap();
        assert_eq!(serde_json::to_string(&pat).unwrap(), "\"**.corp.internal\"");
        let err = serde_json::from_str::<DnsPattern>("\"a.*.b\"").unwrap_err();
        assert!(err.to_string().contains("wildcard"), "{err}");
    }
}

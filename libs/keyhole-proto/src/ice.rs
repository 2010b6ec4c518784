//! ICE parameters exchanged through the portal.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest candidate string accepted; real ones are ~100 characters.
pub const MAX_CANDIDATE_LEN: usize = 512;

/// `ice-char` of RFC 8839: ALPHA / DIGIT / "+" / "/".
fn is_ice_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '+' || c == '/'
}

/// ICE username fragment and password of one side of a flow (RFC 8445:
/// ufrag 4–256 ice-chars, password 22–256 ice-chars). The password is a
/// secret and is not shown by `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawIceCredentials")]
pub struct IceCredentials {
    pub username: String,
    pub password: String,
}

#[derive(Deserialize)]
struct RawIceCredentials {
    username: String,
    password: String,
}

impl TryFrom<RawIceCredentials> for IceCredentials {
    type Error = String;
    fn try_from(r: RawIceCredentials) -> Result<Self, String> {
        Self::new(r.username, r.password)
    }
}

impl IceCredentials {
    pub fn new(username: String, password: String) -> Result<Self, String> {
        if !(4..=256).contains(&username.len()) || !username.chars().all(is_ice_char) {
            return Err("ICE username must be 4-256 characters of A-Z a-z 0-9 + /".into());
        }
        if !(22..=256).contains(&password.len()) || !password.chars().all(is_ice_char) {
            return Err("ICE password must be 22-256 characters of A-Z a-z 0-9 + /".into());
        }
        Ok(Self { username, password })
    }
}

impl fmt::Debug for IceCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IceCredentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// One ICE candidate as the value of an SDP `a=candidate:` attribute,
/// without the `a=`: `candidate:1 1 udp 2130706431 192.0.2.1 51820 typ host`
/// (what str0m's `Candidate::to_sdp_string` produces). Only its shape is
/// checked here; the ICE agent parses it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IceCandidate(String);

impl IceCandidate {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for IceCandidate {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s.len() > MAX_CANDIDATE_LEN {
            return Err(format!(
                "ICE candidate is {} bytes, the limit is {MAX_CANDIDATE_LEN}",
                s.len()
            ));
        }
        if !s.starts_with("candidate:") {
            return Err("ICE candidate must start with `candidate:`".into());
        }
        if !s.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
            return Err("ICE candidate must be printable ASCII".into());
        }
        Ok(Self(s))
    }
}

impl From<IceCandidate> for String {
    fn from(c: IceCandidate) -> String {
        c.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_validate_and_redact() {
        let c = IceCredentials::new("abcd".into(), "p".repeat(22)).unwrap();
        assert!(!format!("{c:?}").contains("pppp"));
        assert!(IceCredentials::new("abc".into(), "p".repeat(22)).is_err());
        assert!(IceCredentials::new("abcd".into(), "p".repeat(21)).is_err());
        assert!(IceCredentials::new("ab:d".into(), "p".repeat(22)).is_err());
        let e = serde_json::from_str::<IceCredentials>(r#"{"username":"abcd","password":"short"}"#)
            .unwrap_err();
        assert!(e.to_string().contains("password"), "{e}");
    }

    #[test]
    fn candidates_validate() {
        let ok = "candidate:1 1 udp 2130706431 192.0.2.1 51820 typ host";
        assert_eq!(IceCandidate::try_from(ok.to_owned()).unwrap().as_str(), ok);
        assert!(IceCandidate::try_from("a=candidate:1".to_owned()).is_err());
        assert!(IceCandidate::try_from("candidate:1\r\na=evil".to_owned()).is_err());
        assert!(IceCandidate::try_from(format!("candidate:{}", "x".repeat(600))).is_err());
    }
}

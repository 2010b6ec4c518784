//! Keyhole gateway library: the pieces the `keyhole-gateway` binary and the
//! netns tests share.

pub mod nat;
pub mod policy;
pub mod wg;

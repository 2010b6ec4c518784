//! Keyhole gateway library: the pieces the `keyhole-gateway` binary and the
//! netns tests share.

pub mod backend;
pub mod dns;
pub mod nat;
pub mod policy;
pub mod session;
pub mod state;
pub mod steering;
pub mod wg;

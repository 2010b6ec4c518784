//! `keyhole`: the Keyhole client CLI.

mod control;

fn main() {}

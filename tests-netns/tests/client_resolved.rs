//! `keyhole up` against a real systemd-resolved: runs
//! `client/scripts/resolved_live.sh`, which starts Debian's resolved (the
//! package only extracted, never installed) and a private system bus in a
//! private mount + network namespace, and checks that auto mode picks
//! resolved, the TUN link gets the stub, `~.` and the default route, names
//! go through the stub, nothing bypasses it, and exit, SIGKILL + `keyhole
//! down` undo it. The host's resolver is never touched.
//!
//! Needs root, `apt-get download` (Debian's registry), `dbus-daemon`, and
//! the client binary (`cargo build -p keyhole-client`).

use std::path::PathBuf;
use std::process::Command;

use keyhole_tests_netns::scenario::built_binary;

#[test]
fn keyhole_up_routes_names_through_a_real_systemd_resolved() {
    keyhole_tests_netns::require_root();
    let kh = built_binary(
        "keyhole",
        "KEYHOLE_CLIENT_BIN",
        "`cargo build -p keyhole-client`",
    )
    .unwrap();
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../client/scripts/resolved_live.sh");
    let out = Command::new("bash").arg(&script).arg(&kh).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("OK: systemd-resolved"),
        "{}\n--- stdout\n{stdout}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

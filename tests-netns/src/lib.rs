//! Network-namespace test harness.

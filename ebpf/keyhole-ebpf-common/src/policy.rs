//! Types of the gateway's policy filter maps.

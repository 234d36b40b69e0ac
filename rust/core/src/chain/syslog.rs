//! The syslog step (being written).

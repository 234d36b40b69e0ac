//! The log step (being written).

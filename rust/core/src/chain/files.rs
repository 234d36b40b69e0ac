//! The files step (being written).

//! Server functions of the policy area.

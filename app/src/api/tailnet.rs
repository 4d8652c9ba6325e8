//! Server functions of the tailnet area.

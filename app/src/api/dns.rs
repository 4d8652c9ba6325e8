//! Server functions of the dns area.

//! Wire types of the Tailscale control protocol ("tailcfg"), with the JSON shapes that
//! Go's `encoding/json` gives them: PascalCase Go field names unless renamed, `omitempty`
//! fields skipped when empty, keys as `prefix:hex` text.
//!
//! Nothing here does I/O; the crate compiles for the browser too (the console's policy
//! preview shows [`FilterRule`]s and [`SshPolicy`]s).
//!
//! Client→server types never deny unknown fields: new clients add fields all the time.

pub mod filter;
pub mod key;
pub mod ssh;

pub use filter::{FilterRule, NetPortRange, PortRange};
pub use key::{ChallengePublic, DiscoPublic, KeyParseError, MachinePublic, NodePublic};
pub use ssh::{SshAction, SshPolicy, SshPrincipal, SshRule};

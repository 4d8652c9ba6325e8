//! Wire types of the Tailscale control protocol ("tailcfg"), with the JSON shapes that
//! Go's `encoding/json` gives them: PascalCase Go field names unless renamed, `omitempty`
//! fields skipped when empty, keys as `prefix:hex` text, times as RFC 3339.
//!
//! Nothing here does I/O; the crate compiles for the browser too (the console's policy
//! preview shows [`FilterRule`]s and [`SshPolicy`]s).
//!
//! Client→server types never deny unknown fields: new clients add fields all the time.

pub mod bounds;
pub mod derp_map;
pub mod dns;
pub mod filter;
pub mod hostinfo;
pub mod key;
pub mod map;
pub mod register;
pub mod ssh;
pub mod time_fmt;

pub use bounds::BoundsError;
pub use derp_map::{DerpMap, DerpNode, DerpRegion};
pub use dns::{DnsConfig, DnsRecord, Resolver};
pub use filter::{FilterRule, NetPortRange, PortRange};
pub use hostinfo::{Hostinfo, NetInfo};
pub use key::{ChallengePublic, DiscoPublic, KeyParseError, MachinePublic, NodePublic};
pub use map::{MapRequest, MapResponse, Node, NodeId, PeerChange, UserId, UserProfile};
pub use register::{Login, RegisterAuth, RegisterRequest, RegisterResponse, RegisterUser};
pub use ssh::{SshAction, SshPolicy, SshPrincipal, SshRule};

/// The capability version of the newest client this server was verified against (1.90).
pub const VERIFIED_CAPABILITY_VERSION: u32 = 130;
/// The oldest client capability version the server accepts (1.80, as headscale does).
pub const MIN_CAPABILITY_VERSION: u32 = 113;

//! Full maps assembled from shared, pre-compressed peer chunks.
//!
//! With most policies nearly every viewer sees the same peers with the same JSON, so
//! rendering and compressing each viewer's full map costs O(N) per viewer and O(N²) for a
//! join wave or a reconnect storm. A map message is a 4-byte length and then zstd data that
//! clients decode with a decoder that accepts any number of concatenated frames (Tailscale's
//! `zstdframe.AppendDecode`: "the input may consist of zero or more frames"; libzstd's
//! one-shot decoder likewise). So the `Peers` array is cut into chunks, the tailnet's
//! blocks of node ids (`tailnet::nodes`); a chunk every member of which the viewer sees
//! with the shared rendering is compressed once per version of its members and its frame
//! is sent, by reference, to every such viewer. Only the rest — the viewer's own node, its
//! own chunk, peers shown with viewer-specific routes and the map's other fields — is
//! compressed per viewer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::{BufMut, Bytes, BytesMut};
use time::OffsetDateTime;

use crate::tailnet::model::{Node, NodeId, UserId};

/// A chunk's members (every node in its id range, in id order), what a full map needs to
/// know about them as a whole, and their frame.
pub struct Chunk {
    /// The block's stamp when these were its members.
    stamp: u64,
    members: Vec<Arc<Node>>,
    /// The members' ids, kept apart from the nodes so that recording a full map's peers
    /// reads one short array instead of touching every node.
    ids: Vec<NodeId>,
    /// Their owners, each once.
    owners: Vec<Option<UserId>>,
    /// Whether any member serves a route (and so is shown per viewer).
    any_routes: bool,
    /// Whether any member waits for approval (and so is nobody's peer).
    any_unapproved: bool,
    /// The earliest key expiry among the members.
    earliest_expiry: Option<OffsetDateTime>,
    frame: OnceLock<Bytes>,
    /// The same without the comma after the last member, for the end of the array.
    last_frame: OnceLock<Bytes>,
}

impl Chunk {
    fn new(stamp: u64, members: Vec<Arc<Node>>) -> Chunk {
        let mut owners: Vec<Option<UserId>> = members.iter().map(|m| m.user).collect();
        owners.sort_unstable();
        owners.dedup();
        Chunk {
            stamp,
            ids: members.iter().map(|m| m.id).collect(),
            owners,
            any_routes: members.iter().any(|m| m.serves_routes()),
            any_unapproved: members.iter().any(|m| !m.approved),
            earliest_expiry: members.iter().filter_map(|m| m.expiry).min(),
            members,
            frame: OnceLock::new(),
            last_frame: OnceLock::new(),
        }
    }

    pub fn ids(&self) -> &[NodeId] {
        &self.ids
    }

    pub fn owners(&self) -> &[Option<UserId>] {
        &self.owners
    }

    /// Whether every member is shown with the shared rendering to any viewer that may see
    /// it: none routes, none waits for approval and none has expired at `now`.
    pub fn shown_alike(&self, now: OffsetDateTime) -> bool {
        !self.any_routes && !self.any_unapproved && self.earliest_expiry.is_none_or(|e| e > now)
    }

    /// The zstd frame of the members' shared JSON, each followed by a comma, or with
    /// `last` (the chunk ends the array) separated by commas only. `render` gives one
    /// member's JSON. Concurrent viewers of a new version wait for one compression instead
    /// of each doing it.
    pub fn frame(
        &self,
        render: impl Fn(&Node) -> Arc<serde_json::value::RawValue>,
        last: bool,
    ) -> Bytes {
        let cell = if last { &self.last_frame } else { &self.frame };
        cell.get_or_init(|| {
            let mut json = Vec::with_capacity(self.members.len() * 640);
            for m in &self.members {
                json.extend_from_slice(render(m).get().as_bytes());
                json.push(b',');
            }
            if last {
                json.pop();
            }
            // Level 1 as elsewhere: in a storm a chunk is re-made for every writer batch
            // that flips one of its members online, and level 3 cost more CPU than its
            // smaller output saved.
            Bytes::from(super::compress(&json))
        })
        .clone()
    }
}

/// The shared chunks of the tailnet, each for the newest version of its members seen.
#[derive(Default)]
pub struct PeerChunks {
    chunks: Mutex<HashMap<NodeId, Arc<Chunk>>>,
}

impl PeerChunks {
    /// The chunk of block `chunk` whose members, given by `members`, carry the block's
    /// `stamp`. Called under the tailnet's read lock: when the cached chunk is current this
    /// compares one number and does not look the members up, so a full map's snapshot
    /// touches neither N nodes nor the node table's B-tree.
    pub fn get<'a, I: Iterator<Item = &'a Arc<Node>>>(
        &self,
        chunk: NodeId,
        stamp: u64,
        members: impl FnOnce() -> I,
    ) -> Arc<Chunk> {
        let mut chunks = self.chunks.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = chunks.get(&chunk)
            && c.stamp == stamp
        {
            return c.clone();
        }
        let c = Arc::new(Chunk::new(stamp, members().cloned().collect()));
        chunks.insert(chunk, c.clone());
        c
    }

    pub fn len(&self) -> usize {
        self.chunks.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Builds one map message out of pieces: per-viewer JSON (compressed here, frame by frame)
/// and shared frames (sent as they are). The result is the length prefix followed by the
/// pieces, to be written in order.
#[derive(Default)]
pub struct MessageBuilder {
    pieces: Vec<Bytes>,
    json: Vec<u8>,
}

impl MessageBuilder {
    pub fn json(&mut self) -> &mut Vec<u8> {
        &mut self.json
    }

    fn flush(&mut self) {
        if !self.json.is_empty() {
            self.pieces
                .push(Bytes::from(super::compress(&std::mem::take(
                    &mut self.json,
                ))));
        }
    }

    /// Appends an already compressed frame.
    pub fn frame(&mut self, frame: Bytes) {
        self.flush();
        self.pieces.push(frame);
    }

    pub fn finish(mut self) -> Vec<Bytes> {
        self.flush();
        let len: usize = self.pieces.iter().map(Bytes::len).sum();
        let mut pieces = self.pieces.into_iter();
        // The length prefix travels with the first (per-viewer, small) frame.
        let first = pieces.next().unwrap_or_default();
        let mut head = BytesMut::with_capacity(4 + first.len());
        head.put_u32_le(len as u32);
        head.extend_from_slice(&first);
        std::iter::once(head.freeze()).chain(pieces).collect()
    }
}

//! The transport's wire format: greeting, hello, frames and their MACs, and size limits.
//!
//! Pure functions over byte buffers and `Write`; no sockets, threads or timeouts (those are
//! in the parent module).
//!
//! # Handshake (all integers little-endian)
//!
//! ```text
//! server → client   "BENMO1" (6 bytes) ‖ nonce (32 fresh random bytes)
//! client → server   client_id (u32) ‖ HMAC(key, "benmo-hello" ‖ nonce ‖ client_id u32 ‖ server_id u32)
//! ```
//!
//! The server checks that `client_id` names a peer (not itself) and that the tag is right.
//! Only a holder of the 32-byte cluster key can compute the tag, and the fresh nonce means a
//! recorded hello is useless on a later connection. The server sends no reply; a rejected
//! client just sees the connection close.
//!
//! # Frames (client → server only)
//!
//! ```text
//! length (u32) ‖ MAC (32 bytes) ‖ payload (`length` bytes, serde_json of an `Envelope`)
//! MAC = HMAC(key, "benmo-frame" ‖ nonce ‖ counter u64 ‖ payload)
//! ```
//!
//! `counter` starts at 0 on each connection and grows by one per frame, so a replayed,
//! reordered, dropped-then-resumed or altered frame fails its MAC, and so does a frame from an
//! old connection (different nonce). An empty payload is a keepalive. The sender of a
//! delivered message is the id authenticated in the handshake, never anything inside the
//! payload.

use crate::paxos::Envelope;
use hmac::digest::CtOutput;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::io::{self, Write};

/// The largest payload a frame may carry. Checked before any buffer is allocated.
pub const MAX_FRAME: usize = 16 << 20;

/// The first bytes a server sends on every connection.
pub const MAGIC: &[u8; 6] = b"BENMO1";
pub const NONCE_LEN: usize = 32;
/// Length of an HMAC-SHA256 tag (hello tags and frame MACs).
pub const TAG_LEN: usize = 32;
/// The server's greeting: `MAGIC` then the connection's nonce.
pub const GREETING_LEN: usize = MAGIC.len() + NONCE_LEN;
/// The client's hello: its id (u32) then the hello tag.
pub(super) const HELLO_LEN: usize = 4 + TAG_LEN;
/// A frame header: the payload length (u32) then the frame MAC.
pub(super) const HEADER_LEN: usize = 4 + TAG_LEN;

type HmacSha256 = Hmac<Sha256>;
/// The per-connection random value every tag and MAC on that connection covers.
pub(super) type Nonce = [u8; NONCE_LEN];

// ----- handshake -----

/// The server's greeting for the connection with `nonce`.
pub(super) fn greeting(nonce: &Nonce) -> [u8; GREETING_LEN] {
    let mut greeting = [0u8; GREETING_LEN];
    greeting[..MAGIC.len()].copy_from_slice(MAGIC);
    greeting[MAGIC.len()..].copy_from_slice(nonce);
    greeting
}

/// The nonce in a server's greeting; None if it does not start with `MAGIC`.
pub(super) fn greeting_nonce(greeting: &[u8; GREETING_LEN]) -> Option<Nonce> {
    if greeting[..MAGIC.len()] != MAGIC[..] {
        return None;
    }
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&greeting[MAGIC.len()..]);
    Some(nonce)
}

/// The hello `client` sends `server` on the connection with `nonce`.
pub(super) fn hello(key: &[u8; 32], nonce: &Nonce, client: u32, server: u32) -> [u8; HELLO_LEN] {
    let mut hello = [0u8; HELLO_LEN];
    hello[..4].copy_from_slice(&client.to_le_bytes());
    hello[4..].copy_from_slice(&hello_tag(key, nonce, client, server));
    hello
}

/// The client id a hello claims, not yet verified.
pub(super) fn hello_client(hello: &[u8; HELLO_LEN]) -> u32 {
    u32_at(hello)
}

/// Whether `hello` carries the right tag for its client id, addressed to `server`.
pub(super) fn hello_verifies(
    key: &[u8; 32],
    nonce: &Nonce,
    hello: &[u8; HELLO_LEN],
    server: u32,
) -> bool {
    let expected = hello_tag(key, nonce, hello_client(hello), server);
    tag_matches(expected, &hello[4..])
}

/// The tag in the hello of `client` to `server` on the connection with `nonce`:
/// HMAC(key, "benmo-hello" ‖ nonce ‖ client u32 ‖ server u32).
pub fn hello_tag(key: &[u8; 32], nonce: &Nonce, client: u32, server: u32) -> [u8; TAG_LEN] {
    hmac(
        key,
        &[
            b"benmo-hello",
            nonce,
            &client.to_le_bytes(),
            &server.to_le_bytes(),
        ],
    )
}

// ----- frames -----

/// The MAC of frame number `counter` on the connection with `nonce`:
/// HMAC(key, "benmo-frame" ‖ nonce ‖ counter u64 ‖ payload).
pub fn frame_mac(key: &[u8; 32], nonce: &Nonce, counter: u64, payload: &[u8]) -> [u8; TAG_LEN] {
    hmac(
        key,
        &[b"benmo-frame", nonce, &counter.to_le_bytes(), payload],
    )
}

/// Writes one frame (header and payload) and advances the counter.
pub(super) fn write_frame(
    out: &mut impl Write,
    key: &[u8; 32],
    nonce: &Nonce,
    counter: &mut u64,
    payload: &[u8],
) -> io::Result<()> {
    let tag = frame_mac(key, nonce, *counter, payload);
    *counter += 1;
    // `encode` refuses payloads over MAX_FRAME, so the length fits in a u32.
    out.write_all(&(payload.len() as u32).to_le_bytes())?;
    out.write_all(&tag)?;
    out.write_all(payload)
}

/// The payload length and MAC a frame header announces; Err if the length is over
/// `MAX_FRAME` (so no buffer is allocated for it).
pub(super) fn parse_header(header: &[u8; HEADER_LEN]) -> Result<(usize, [u8; TAG_LEN]), String> {
    let len = u32_at(header) as usize;
    if len > MAX_FRAME {
        return Err(format!("frame of {len} bytes exceeds limit"));
    }
    let mut tag = [0u8; TAG_LEN];
    tag.copy_from_slice(&header[4..]);
    Ok((len, tag))
}

/// Checks the MAC of frame number `counter` and advances the counter: the receiving
/// counterpart of `write_frame`.
pub(super) fn check_frame(
    key: &[u8; 32],
    nonce: &Nonce,
    counter: &mut u64,
    tag: &[u8; TAG_LEN],
    payload: &[u8],
) -> Result<(), String> {
    let expected = frame_mac(key, nonce, *counter, payload);
    if !tag_matches(expected, tag) {
        return Err(format!("bad MAC on frame {counter}"));
    }
    *counter += 1;
    Ok(())
}

// ----- payloads -----

/// The payload carrying `env`; Err (worded for a warning) if it cannot be encoded or would
/// exceed `MAX_FRAME`.
pub(super) fn encode(env: &Envelope) -> Result<Vec<u8>, String> {
    let payload = serde_json::to_vec(env).map_err(|e| format!("cannot encode envelope: {e}"))?;
    if payload.len() > MAX_FRAME {
        let len = payload.len();
        return Err(format!(
            "not sending envelope of {len} bytes: exceeds frame limit"
        ));
    }
    Ok(payload)
}

/// The envelope in the payload of frame number `frame`, which must name only nodes below
/// `nodes`.
pub(super) fn decode(payload: &[u8], nodes: usize, frame: u64) -> Result<Envelope, String> {
    let env: Envelope = serde_json::from_slice(payload)
        .map_err(|e| format!("undecodable envelope in frame {frame}: {e}"))?;
    if let Some(node) = env.unknown_node(nodes) {
        return Err(format!(
            "envelope in frame {frame} names unknown node {node}"
        ));
    }
    Ok(env)
}

// ----- primitives -----

/// HMAC-SHA256 of the concatenation of `parts`.
fn hmac(key: &[u8; 32], parts: &[&[u8]]) -> [u8; TAG_LEN] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    parts.iter().for_each(|part| mac.update(part));
    mac.finalize().into_bytes().into()
}

/// Compares a received tag with the expected one in constant time, so how fast a forgery
/// is refused says nothing about how close it was.
fn tag_matches(expected: [u8; TAG_LEN], received: &[u8]) -> bool {
    let Ok(received) = <[u8; TAG_LEN]>::try_from(received) else {
        return false;
    };
    CtOutput::<HmacSha256>::new(expected.into()) == CtOutput::new(received.into())
}

fn u32_at(bytes: &[u8]) -> u32 {
    u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

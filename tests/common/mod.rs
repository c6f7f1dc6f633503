//! What the integration tests share: a hand-driven peer client and sample values.
//!
//! Each test binary that says `mod common;` compiles its own copy, and none uses all of it.
#![allow(dead_code)]

use benmo::ledger::{Block, Ledger, Transfer, TxId};
use benmo::paxos::Envelope;
use benmo::transport::{self, GREETING_LEN, MAGIC, TAG_LEN};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Cluster size and opening balance of the samples.
pub const NODES: usize = 3;
pub const BALANCE: u64 = 100;

/// How long `Raw::open` waits for the greeting.
const GREETING_WAIT: Duration = Duration::from_secs(30);

// ----- samples -----

pub fn tx(node: usize, seq: u64, credit: usize, amount: u64) -> Transfer {
    Transfer {
        id: TxId { node, seq },
        credit,
        amount,
    }
}

/// `n` valid blocks from genesis; block i moves 1 + i % 7 from node i % 3 to the next node.
pub fn chain(n: u64) -> Vec<Block> {
    let mut ledger = Ledger::new(NODES, BALANCE);
    (0..n)
        .map(|i| {
            let from = (i % NODES as u64) as usize;
            let seq = ledger.next_seq[from];
            let b = ledger.seal(1, &[tx(from, seq, (from + 1) % NODES, 1 + i % 7)]);
            ledger.apply(&b).unwrap();
            b
        })
        .collect()
}

// ----- a hand-driven peer -----

/// A raw client of node 0's transport: an attacker, or a key holder playing another node.
/// It speaks the handshake and frame format of `benmo::transport` byte by byte, so tests
/// can send anything, well formed or not.
pub struct Raw {
    pub s: TcpStream,
    nonce: [u8; 32],
    counter: u64,
    key: [u8; 32],
}

impl Raw {
    /// Connects and reads the greeting; sends nothing. `key` is used for what it MACs.
    pub fn open(addr: &str, key: [u8; 32]) -> Raw {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(GREETING_WAIT)).unwrap();
        let mut greeting = [0u8; GREETING_LEN];
        s.read_exact(&mut greeting).unwrap();
        assert_eq!(&greeting[..MAGIC.len()], MAGIC);
        Raw {
            s,
            nonce: greeting[MAGIC.len()..].try_into().unwrap(),
            counter: 0,
            key,
        }
    }

    /// Connects and says hello as `client` to node 0, with `key`.
    pub fn login(addr: &str, key: [u8; 32], client: u32) -> Raw {
        let mut raw = Raw::open(addr, key);
        let hello = raw.hello(client);
        raw.put(&hello);
        raw
    }

    /// Our local port, by which node 0's log names this connection.
    pub fn port(&self) -> u16 {
        self.s.local_addr().unwrap().port()
    }

    /// The bytes of a hello as `client` to node 0.
    pub fn hello(&self, client: u32) -> Vec<u8> {
        let tag = transport::hello_tag(&self.key, &self.nonce, client, 0);
        [client.to_le_bytes().as_slice(), &tag].concat()
    }

    /// The bytes of the next correctly MAC'd frame.
    pub fn frame(&mut self, payload: &[u8]) -> Vec<u8> {
        let mac = transport::frame_mac(&self.key, &self.nonce, self.counter, payload);
        self.counter += 1;
        let mut out = Vec::with_capacity(4 + TAG_LEN + payload.len());
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&mac);
        out.extend_from_slice(payload);
        out
    }

    pub fn env_frame(&mut self, env: &Envelope) -> Vec<u8> {
        self.frame(&serde_json::to_vec(env).unwrap())
    }

    /// Writes, ignoring errors: the node may already have hung up.
    pub fn put(&mut self, bytes: &[u8]) {
        let _ = self.s.write_all(bytes);
    }

    /// Asserts node 0 closes the connection (EOF or reset) within `within`.
    pub fn dropped_within(&mut self, within: Duration) {
        self.s.set_read_timeout(Some(within)).unwrap();
        let mut buf = [0u8; 256];
        loop {
            match self.s.read(&mut buf) {
                Ok(0) => return,
                Ok(_) => panic!("node 0 sent data after the greeting"),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    panic!("connection still open after {within:?}")
                }
                Err(_) => return, // reset: closed with our bytes unread
            }
        }
    }
}

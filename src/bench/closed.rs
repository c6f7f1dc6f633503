//! Closed-loop clients, and the physical floor their latency is compared with.
//!
//! C clients in all, each with one transfer outstanding: a client writes its transfer to its
//! node's stdin and writes the next only once that transfer's `committed` line arrives. Clients
//! at one node share its stdin, so a client learns its TXID from the `queued` line that
//! answers its write (a node answers its stdin in order) and then waits for that TXID.

use super::{percentile, Bench, Note, Seen};
use std::collections::{HashMap, VecDeque};
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

/// Which node each of `clients` clients writes to: round robin over the followers first
/// (in id order after the leader), the leader last.
pub(super) fn placement(nodes: usize, leader: usize, clients: usize) -> Vec<usize> {
    assert!(leader < nodes, "the leader is one of the nodes");
    let order: Vec<usize> = (1..=nodes).map(|i| (leader + i) % nodes).collect();
    (0..clients).map(|c| order[c % nodes]).collect()
}

/// What to do when the time is up.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    /// Wait for every outstanding transfer to commit (a measurement).
    Drain,
    /// Return at once, transfers still in flight (the crash loop kills the nodes then).
    Abandon,
}

/// One closed loop's outcome.
pub(super) struct LoopRun {
    /// Commits matched to a client.
    pub transfers: u64,
    /// From the first write to the last commit.
    pub seconds: f64,
    /// Write-to-`committed` latencies, sorted.
    pub latencies: Vec<Duration>,
    /// Transfers written and not yet committed when the loop returned.
    pub in_flight: usize,
}

/// The clients' bookkeeping.
struct Clients {
    node_of: Vec<usize>,
    sent: Vec<Instant>,
    /// Per node: clients whose line was written and whose `queued` line has not come yet.
    unqueued: Vec<VecDeque<usize>>,
    /// Per node: the client waiting for each TXID's seq.
    waiting: Vec<HashMap<u64, usize>>,
    outstanding: usize,
}

impl Clients {
    fn new(nodes: usize, at: &[usize]) -> Clients {
        Clients {
            node_of: at.to_vec(),
            sent: vec![Instant::now(); at.len()],
            unqueued: vec![VecDeque::new(); nodes],
            waiting: vec![HashMap::new(); nodes],
            outstanding: 0,
        }
    }

    /// The client whose transfer this note finished, if any; matches `queued` lines to
    /// writes on the way.
    fn finished(&mut self, note: &Note) -> Option<usize> {
        match note.seen {
            Seen::Queued(seq) => {
                if let Some(c) = self.unqueued[note.node].pop_front() {
                    self.waiting[note.node].insert(seq, c);
                }
                None
            }
            Seen::Committed(seq, _) => self.waiting[note.node].remove(&seq),
            _ => None,
        }
    }
}

impl Bench {
    /// Runs one client per entry of `at` (its node) for `length`, closed loop.
    pub(super) fn closed_loop(
        &mut self,
        at: &[usize],
        length: Duration,
        stop: Stop,
    ) -> Result<LoopRun, String> {
        let mut clients = Clients::new(self.n(), at);
        let start = Instant::now();
        let end = start + length;
        let mut last = start;
        let mut latencies = Vec::new();
        for c in 0..at.len() {
            self.submit(&mut clients, c)?;
        }
        while clients.outstanding > 0 {
            let wait = match stop {
                Stop::Abandon if Instant::now() >= end => break,
                Stop::Abandon => end - Instant::now(),
                Stop::Drain => super::PATIENCE,
            };
            let Some(note) = self.next_note(wait, "closed-loop commits")? else {
                continue;
            };
            let done = clients.finished(&note);
            let at = note.at;
            self.record(note)?;
            let Some(c) = done else { continue };
            latencies.push(at - clients.sent[c]);
            last = last.max(at);
            clients.outstanding -= 1;
            if Instant::now() < end {
                self.submit(&mut clients, c)?;
            }
        }
        latencies.sort();
        Ok(LoopRun {
            transfers: latencies.len() as u64,
            seconds: (last - start).as_secs_f64(),
            latencies,
            in_flight: clients.outstanding,
        })
    }

    /// Writes client `c`'s next transfer.
    fn submit(&mut self, clients: &mut Clients, c: usize) -> Result<(), String> {
        let node = clients.node_of[c];
        self.submitted[node] += 1;
        clients.unqueued[node].push_back(c);
        clients.sent[c] = Instant::now();
        clients.outstanding += 1;
        self.write(node, &self.transfer_line(node, self.submitted[node]))
    }
}

// ----- the floor -----

/// The physical floor of one transfer, measured on this machine in this run.
#[derive(Clone, Copy, Debug)]
pub(super) struct Floor {
    /// p50 of a 4 KiB append + fdatasync in the data dir.
    pub fsync: Duration,
    /// p50 of a loopback TCP round trip between two threads.
    pub rtt: Duration,
}

impl Floor {
    /// One fsync on the critical path plus four hops (follower, leader, acceptors, leader,
    /// follower), that is two round trips.
    pub fn total(&self) -> Duration {
        self.fsync + 2 * self.rtt
    }

    pub fn measure(dir: &Path) -> Result<Floor, String> {
        Ok(Floor {
            fsync: fsync_p50(dir)
                .map_err(|e| format!("cannot time fdatasync in {}: {e}", dir.display()))?,
            rtt: rtt_p50().map_err(|e| format!("cannot time a loopback round trip: {e}"))?,
        })
    }
}

/// What the floor columns measure, printed under the table.
pub(super) const FLOOR_NOTE: &str = "\
fsync: p50 of 200 appends of 4 KiB, each followed by fdatasync, to a fresh file in the data dir
rtt: p50 of 1000 round trips of 64 bytes between two threads of the benchmark over one TCP
  connection on 127.0.0.1 (TCP_NODELAY, blocking reads: write, read and echo, read)
floor: fsync + 2 rtt (one fsync, and the hops follower, leader, acceptors, leader, follower)";

const FSYNCS: usize = 200;
const ROUND_TRIPS: usize = 1000;
const MESSAGE: usize = 64;

fn fsync_p50(dir: &Path) -> std::io::Result<Duration> {
    let path = dir.join("floor-fsync.tmp");
    let mut file = fs::File::create(&path)?;
    let block = [0x5a_u8; 4096];
    let mut times = Vec::with_capacity(FSYNCS);
    for _ in 0..FSYNCS {
        let started = Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        times.push(started.elapsed());
    }
    drop(file);
    fs::remove_file(&path)?;
    times.sort();
    Ok(percentile(&times, 50.0))
}

fn rtt_p50() -> std::io::Result<Duration> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut peer, _) = listener.accept()?;
        peer.set_nodelay(true)?;
        let mut buf = [0u8; MESSAGE];
        // Ends when the other side closes.
        while peer.read_exact(&mut buf).is_ok() {
            peer.write_all(&buf)?;
        }
        Ok(())
    });
    let mut stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    let mut buf = [7u8; MESSAGE];
    let mut times = Vec::with_capacity(ROUND_TRIPS);
    for _ in 0..ROUND_TRIPS {
        let started = Instant::now();
        stream.write_all(&buf)?;
        stream.read_exact(&mut buf)?;
        times.push(started.elapsed());
    }
    drop(stream);
    echo.join().expect("the echo thread does not panic")?;
    times.sort();
    Ok(percentile(&times, 50.0))
}

// ----- the report -----

pub(super) const CLOSED_HEADER: &str =
    "clients  transfers  transfers/s   p50 ms   p99 ms   max ms  fsync ms  rtt ms  floor ms  p50/floor";

/// One concurrency's row: its figures and, beside them, the floor.
pub(super) fn closed_row(clients: usize, run: &LoopRun, floor: &Floor) -> String {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let p50 = percentile(&run.latencies, 50.0);
    let rate = match run.seconds > 0.0 {
        true => run.transfers as f64 / run.seconds,
        false => 0.0,
    };
    format!(
        "{clients:>7} {:>10} {rate:>12.0} {:>8.2} {:>8.2} {:>8.2} {:>9.3} {:>7.3} {:>9.3} {:>10.1}",
        run.transfers,
        ms(p50),
        ms(percentile(&run.latencies, 99.0)),
        ms(percentile(&run.latencies, 100.0)),
        ms(floor.fsync),
        ms(floor.rtt),
        ms(floor.total()),
        p50.as_secs_f64() / floor.total().as_secs_f64().max(1e-9),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_go_to_the_followers_first() {
        assert_eq!(placement(5, 3, 1), [4]);
        assert_eq!(placement(5, 3, 6), [4, 0, 1, 2, 3, 4]);
        assert_eq!(placement(3, 0, 4), [1, 2, 0, 1]);
    }

    #[test]
    fn a_row_lines_up_under_its_header() {
        let latencies: Vec<Duration> = (1..=1000).map(Duration::from_micros).collect();
        let run = LoopRun {
            transfers: 1000,
            seconds: 2.0,
            latencies,
            in_flight: 0,
        };
        let floor = Floor {
            fsync: Duration::from_micros(300),
            rtt: Duration::from_micros(50),
        };
        let row = closed_row(16, &run, &floor);
        assert_eq!(
            row,
            "     16       1000          500     0.50     0.99     1.00     0.300   0.050     0.400        1.2"
        );
        assert_eq!(row.len(), CLOSED_HEADER.len());
    }

    #[test]
    fn an_empty_run_prints_zeros() {
        let run = LoopRun {
            transfers: 0,
            seconds: 0.0,
            latencies: Vec::new(),
            in_flight: 0,
        };
        let floor = Floor {
            fsync: Duration::ZERO,
            rtt: Duration::ZERO,
        };
        assert!(closed_row(1, &run, &floor).contains(" 0 "));
    }
}

//! A cluster of real `benmo node` processes on loopback, driven through their stdin and read
//! through their stdout. The benchmark and the integration tests use it. Every process it
//! starts is killed by PID when its handle drops, so a failing test leaves nothing behind.

use crossbeam_channel::{Receiver, RecvTimeoutError};
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// One running node process.
pub struct NodeProc {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    /// Every stdout line read so far, in order.
    pub seen: Vec<String>,
}

impl NodeProc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Writes one command line; false if the process is gone.
    pub fn send(&mut self, line: &str) -> bool {
        let Some(stdin) = self.stdin.as_mut() else {
            return false;
        };
        writeln!(stdin, "{line}")
            .and_then(|_| stdin.flush())
            .is_ok()
    }

    /// Hands stdin to the caller (the benchmark writes from its own threads); `send` then
    /// returns false.
    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.stdin.take()
    }

    /// Another handle on the stdout line stream. Lines go to whichever handle reads first,
    /// so use either this or `wait_for`, not both.
    pub fn line_stream(&self) -> Receiver<String> {
        self.lines.clone()
    }

    /// Closes stdin: the node must keep running.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Reads lines until one satisfies `want`, returning it; gives up at `deadline`.
    pub fn wait_for(
        &mut self,
        deadline: Instant,
        mut want: impl FnMut(&str) -> bool,
    ) -> Option<String> {
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if want(&l) {
                        return Some(l);
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Reads whatever lines are already waiting.
    pub fn drain(&mut self) {
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
    }

    /// Whether the process has exited (and its exit code, if any).
    pub fn exited(&mut self) -> Option<Option<i32>> {
        self.child.try_wait().ok().flatten().map(|s| s.code())
    }

    pub fn kill(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The first line of `status`, parsed (see `render::parse`).
pub use crate::render::StatusLine as Status;

/// A data dir and the node processes running on it.
pub struct LocalCluster {
    pub exe: PathBuf,
    pub data: PathBuf,
    pub nodes: Vec<Option<NodeProc>>,
    /// Extra flags for every `benmo node`.
    pub node_args: Vec<String>,
    /// A command that node `i` runs under when `prefixes[i]` is not empty, for example
    /// `["ip", "netns", "exec", "NS"]`. The prefix must exec the node in place (keep the
    /// PID), so that killing the child kills the node.
    pub prefixes: Vec<Vec<String>>,
}

/// A base port with `n` free consecutive ports above it on 127.0.0.1.
///
/// The ports come from below Linux's ephemeral range (32768 and up), so the outgoing
/// connections of other tests running at the same time cannot take them.
pub fn free_ports(n: usize) -> u16 {
    for _ in 0..500 {
        let base = rand::Rng::gen_range(&mut rand::thread_rng(), 10_000..32_000 - n as u16);
        let all_free = (0..n).all(|i| TcpListener::bind(("127.0.0.1", base + i as u16)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no {n} free consecutive ports on 127.0.0.1");
}

impl LocalCluster {
    /// Runs `benmo init` for a fresh cluster in `data`, on free ports.
    pub fn init(
        exe: &Path,
        data: &Path,
        nodes: usize,
        balance: u64,
    ) -> Result<LocalCluster, String> {
        Self::init_on_port(exe, data, nodes, balance, free_ports(nodes))
    }

    /// Runs `benmo init` for a fresh cluster in `data`, node i listening on `port + i`.
    pub fn init_on_port(
        exe: &Path,
        data: &Path,
        nodes: usize,
        balance: u64,
        port: u16,
    ) -> Result<LocalCluster, String> {
        let out = Command::new(exe)
            .args([
                "init",
                "--force",
                "--nodes",
                &nodes.to_string(),
                "--balance",
                &balance.to_string(),
            ])
            .args(["--base-port", &port.to_string(), "--data"])
            .arg(data)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
        if !out.status.success() {
            return Err(format!(
                "benmo init failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(LocalCluster {
            exe: exe.to_path_buf(),
            data: data.to_path_buf(),
            nodes: (0..nodes).map(|_| None).collect(),
            node_args: Vec::new(),
            prefixes: vec![Vec::new(); nodes],
        })
    }

    /// Starts node `id` and waits for its banner.
    pub fn start(&mut self, id: usize) -> Result<(), String> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data.join(format!("node{id}.stderr")))
            .map_err(|e| format!("cannot create stderr log: {e}"))?;
        let mut command = match self.prefixes.get(id).map(Vec::as_slice) {
            Some([program, args @ ..]) => {
                let mut c = Command::new(program);
                c.args(args).arg(&self.exe);
                c
            }
            _ => Command::new(&self.exe),
        };
        let mut child = command
            .args(["node", &id.to_string(), "--data"])
            .arg(&self.data)
            .args(&self.node_args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start node {id}: {e}"))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = crossbeam_channel::unbounded();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut node = NodeProc {
            stdin: child.stdin.take(),
            child,
            lines: rx,
            seen: Vec::new(),
        };
        // Generous: a loaded CI machine can take seconds to start a process.
        let deadline = Instant::now() + Duration::from_secs(30);
        node.wait_for(deadline, |l| l.contains("listening on"))
            .ok_or(format!("node {id} did not start"))?;
        self.nodes[id] = Some(node);
        Ok(())
    }

    pub fn start_all(&mut self) -> Result<(), String> {
        (0..self.nodes.len()).try_for_each(|i| self.start(i))
    }

    pub fn node(&mut self, id: usize) -> &mut NodeProc {
        self.nodes[id]
            .as_mut()
            .unwrap_or_else(|| panic!("node {id} is not running"))
    }

    /// Kills node `id` with SIGKILL.
    pub fn kill(&mut self, id: usize) {
        if let Some(mut n) = self.nodes[id].take() {
            n.kill();
        }
    }

    /// Asks node `id` for `status` and parses the reply.
    pub fn status(&mut self, id: usize, timeout: Duration) -> Option<Status> {
        let node = self.nodes[id].as_mut()?;
        if !node.send("status full") {
            return None;
        }
        node.wait_for(Instant::now() + timeout, |l| Status::parse(l).is_some())
            .and_then(|l| Status::parse(&l))
    }

    /// Waits until every running node has the same depth and head and an empty queue.
    pub fn converge(&mut self, timeout: Duration) -> Result<Status, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let running: Vec<usize> = (0..self.nodes.len())
                .filter(|&i| self.nodes[i].is_some())
                .collect();
            let all: Vec<Option<Status>> = running
                .iter()
                .map(|&i| self.status(i, Duration::from_secs(5)))
                .collect();
            let first = all.first().cloned().flatten();
            let same = all.iter().all(|s| {
                s.as_ref().is_some_and(|s| {
                    Some(s.head.clone()) == first.as_ref().map(|f| f.head.clone()) && s.queue == 0
                })
            });
            if same {
                return first.ok_or("no node is running".to_string());
            }
            if Instant::now() > deadline {
                return Err(format!("no convergence within {timeout:?}: {all:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `benmo audit` on the data dir: Ok(summary line) or Err(output).
    pub fn audit(&self) -> Result<String, String> {
        let out = Command::new(&self.exe)
            .args(["audit", "--data"])
            .arg(&self.data)
            .output()
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            Ok(text.trim().to_string())
        } else {
            Err(text)
        }
    }
}

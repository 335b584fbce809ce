//! Real nats-server processes with JetStream for the history sink's tests: one server, or
//! a cluster of three, each in a namespace of its own, listening only on 198.18.0.0/15.
//! The sink reaches them from the lab's client namespace, on a thread that entered it
//! (`in_netns`): threads it spawns, such as the client's runtime, inherit it, and the
//! host's own network is never touched. Servers are killed and namespaces deleted with
//! the `Lab` inside.
// Only the NATS test crate uses this part of the shared harness; the others compile it
// unused.
#![allow(dead_code)]

use std::fs;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;

use super::{require, run, Lab};

/// nats-server as Debian installs it.
const NATS_SERVER: &str = "nats-server";
const CLIENT_PORT: u16 = 4222;
const ROUTE_PORT: u16 = 6222;

pub struct NatsLab {
    pub lab: Lab,
    nodes: Vec<Node>,
}

struct Node {
    name: String,
    ns: String,
    addr: String,
    conf: PathBuf,
    pid: Option<u32>,
    /// Starts so far: each start logs to a file of its own.
    starts: u32,
}

impl NatsLab {
    /// One server at 198.18.0.1, the client namespace at 198.18.0.100. `None` (skip)
    /// without root, as `Lab::new`.
    pub fn single(test: &str) -> Option<NatsLab> {
        Self::single_with(test, "")
    }

    /// `single`, with `extra` appended to the server's configuration.
    pub fn single_with(test: &str, extra: &str) -> Option<NatsLab> {
        let lab = Lab::new(test, "198.18.0.1/24")?;
        lab.in_client(
            "ip",
            &["addr", "add", "198.18.0.100/24", "dev", &lab.client_if],
        );
        let ns = lab.server_ns.clone();
        let mut nl = NatsLab {
            lab,
            nodes: Vec::new(),
        };
        nl.add_node(ns, "198.18.0.1", false, extra);
        nl.start(0);
        Some(nl)
    }

    /// Three servers (198.18.0.1-3) routed to each other in one JetStream cluster, each
    /// in its namespace with a veth to a bridge in the client namespace (198.18.0.100).
    pub fn cluster(test: &str) -> Option<NatsLab> {
        let mut lab = Lab::new(test, "198.18.0.1/24")?;
        let bridge = lab.if_name("nb");
        let cns = lab.client_ns.clone();
        let in_client = |args: &[&str]| run(Command::new("ip").arg("-n").arg(&cns).args(args));
        in_client(&["link", "add", &bridge, "type", "bridge"]);
        in_client(&["link", "set", &lab.client_if, "master", &bridge]);
        in_client(&["addr", "add", "198.18.0.100/24", "dev", &bridge]);
        in_client(&["link", "set", &bridge, "up"]);
        let mut node_ns = vec![lab.server_ns.clone()];
        for i in 2..=3 {
            let ns = lab.add_namespace(&format!("n{i}"));
            let (near, far) = (lab.if_name(&format!("b{i}")), lab.if_name(&format!("n{i}")));
            run(Command::new("ip").args([
                "link", "add", &near, "netns", &cns, "type", "veth", "peer", "name", &far, "netns",
                &ns,
            ]));
            in_client(&["link", "set", &near, "master", &bridge]);
            in_client(&["link", "set", &near, "up"]);
            let addr = format!("198.18.0.{i}/24");
            for args in [
                vec!["addr", "add", &addr, "dev", &far],
                vec!["link", "set", &far, "up"],
                vec!["link", "set", "lo", "up"],
            ] {
                run(Command::new("ip").arg("-n").arg(&ns).args(&args));
            }
            node_ns.push(ns);
        }
        let mut nl = NatsLab {
            lab,
            nodes: Vec::new(),
        };
        for (i, ns) in node_ns.into_iter().enumerate() {
            nl.add_node(ns, &format!("198.18.0.{}", i + 1), true, "");
        }
        for i in 0..3 {
            nl.start(i);
        }
        Some(nl)
    }

    fn add_node(&mut self, ns: String, addr: &str, clustered: bool, extra: &str) {
        let name = format!("n{}", self.nodes.len() + 1);
        let store = self.lab.path(&format!("{name}-store"));
        let mut conf = format!(
            "server_name: {name}\nlisten: \"{addr}:{CLIENT_PORT}\"\n\
             jetstream {{ store_dir: \"{}\", max_file_store: 4G, max_memory_store: 256M }}\n",
            store.display()
        );
        if clustered {
            let routes: Vec<String> = (1..=3)
                .map(|i| format!("\"nats-route://198.18.0.{i}:{ROUTE_PORT}\""))
                .collect();
            conf += &format!(
                "cluster {{ name: dhcpt, listen: \"{addr}:{ROUTE_PORT}\", routes: [{}] }}\n",
                routes.join(", ")
            );
        }
        conf += extra;
        let path = self.lab.path(&format!("{name}.conf"));
        fs::write(&path, conf).unwrap();
        self.nodes.push(Node {
            name,
            ns,
            addr: addr.into(),
            conf: path,
            pid: None,
            starts: 0,
        });
    }

    /// The client URLs of all servers.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("nats://{}:{CLIENT_PORT}", n.addr))
            .collect()
    }

    pub fn node_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    pub fn client_ns(&self) -> String {
        self.lab.client_ns.clone()
    }

    /// Starts server `i` (again, on the same store) and waits until it listens.
    pub fn start(&mut self, i: usize) {
        require(NATS_SERVER);
        let node = &mut self.nodes[i];
        node.starts += 1;
        let log = format!("{}-{}.log", node.name, node.starts);
        let (ns, conf) = (node.ns.clone(), node.conf.display().to_string());
        let pid = self.lab.spawn(&ns, NATS_SERVER, &["-c", &conf], &log);
        self.nodes[i].pid = Some(pid);
        super::wait_for_file(
            &self.lab.path(&log),
            "Server is ready",
            Duration::from_secs(20),
        );
    }

    /// kill -9: no goodbye to the cluster, no flush.
    pub fn kill(&mut self, i: usize) {
        if let Some(pid) = self.nodes[i].pid.take() {
            // SAFETY: kill(2) on a child the lab started and has not reaped.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }

    /// A clean stop (SIGTERM), waited for.
    pub fn stop(&mut self, i: usize) {
        if let Some(pid) = self.nodes[i].pid.take() {
            assert!(
                self.lab.stop(pid).is_some(),
                "{} did not stop",
                self.nodes[i].name
            );
        }
    }

    /// Every server's logs, for a failure message.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            for s in 1..=n.starts {
                let log = format!("{}-{s}.log", n.name);
                let text = fs::read_to_string(self.lab.path(&log)).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                out += &format!("--- {log} (last lines)\n");
                for l in tail.into_iter().rev() {
                    out += l;
                    out.push('\n');
                }
            }
        }
        out
    }
}

/// Runs `f` on a thread inside namespace `ns`; its panics become the caller's.
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        let handle = s.spawn(|| {
            let path = format!("/var/run/netns/{ns}");
            let file = fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // SAFETY: setns(2) on an open namespace file; only this thread (and the
            // threads it starts) moves.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {ns}: {}", std::io::Error::last_os_error());
            f()
        });
        handle
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// Calls `f` until it returns `Some`, for at most `limit`; panics with `what` after.
pub fn eventually<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A message as the stream holds it.
pub struct Stored {
    pub subject: String,
    pub id: String,
    pub json: serde_json::Value,
}

/// A test's own client, next to the sink, to look at what the stream holds.
pub struct Reader {
    rt: tokio::runtime::Runtime,
    js: jetstream::Context,
}

impl Reader {
    pub fn connect(urls: &[String]) -> Reader {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let js = rt.block_on(async {
            let client = async_nats::ConnectOptions::new()
                .connection_timeout(Duration::from_secs(5))
                .request_timeout(Some(Duration::from_secs(5)))
                .connect(
                    urls.iter()
                        .map(|u| u.parse::<async_nats::ServerAddr>().unwrap())
                        .collect::<Vec<_>>(),
                )
                .await
                .expect("connect the reader");
            jetstream::new(client)
        });
        Reader { rt, js }
    }

    /// Every message of `stream`, in stream order, read through an ephemeral pull
    /// consumer; panics if the stream's count cannot be read within a bound.
    pub fn all(&self, stream: &str) -> Vec<Stored> {
        self.rt.block_on(async {
            let mut s = self.js.get_stream(stream).await.expect("get stream");
            let count = s.info().await.expect("stream info").state.messages as usize;
            // A cluster that just lost a node may time out the first attempts.
            let mut attempts = 0;
            let consumer = loop {
                let config = consumer::pull::Config {
                    ack_policy: consumer::AckPolicy::None,
                    ..Default::default()
                };
                match s.create_consumer(config).await {
                    Ok(c) => break c,
                    Err(e) if attempts < 10 => {
                        attempts += 1;
                        eprintln!("create consumer: {e}");
                    }
                    Err(e) => panic!("create consumer: {e}"),
                }
            };
            let mut messages = consumer.messages().await.expect("consume");
            let mut out = Vec::with_capacity(count);
            let deadline = Instant::now() + Duration::from_secs(60);
            while out.len() < count {
                let left = deadline.saturating_duration_since(Instant::now());
                let m = tokio::time::timeout(left, messages.next())
                    .await
                    .unwrap_or_else(|_| panic!("read {} of {count} messages", out.len()))
                    .expect("stream of messages ended")
                    .expect("message");
                let id = m
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Nats-Msg-Id"))
                    .map(|v| v.as_str().to_string())
                    .unwrap_or_default();
                out.push(Stored {
                    subject: m.subject.to_string(),
                    id,
                    json: serde_json::from_slice(&m.payload).expect("JSON payload"),
                });
            }
            out
        })
    }

    /// The position the sink stored for `key`, as text.
    pub fn position(&self, key: &str) -> Option<String> {
        self.rt.block_on(async {
            let kv = self
                .js
                .get_key_value("dhcp-positions")
                .await
                .expect("bucket");
            kv.get(key)
                .await
                .expect("get")
                .map(|b| String::from_utf8_lossy(&b).into_owned())
        })
    }

    /// Overwrites the position for `key`, as a crash before the sink's own store would
    /// have left it.
    pub fn set_position(&self, key: &str, text: &str) {
        self.rt.block_on(async {
            let kv = self
                .js
                .get_key_value("dhcp-positions")
                .await
                .expect("bucket");
            kv.put(key, text.to_string().into()).await.expect("put");
        })
    }

    /// The server name of the stream's leader.
    pub fn leader(&self, stream: &str) -> Option<String> {
        self.rt.block_on(async {
            let mut s = self.js.get_stream(stream).await.ok()?;
            s.info().await.ok()?.cluster.clone()?.leader
        })
    }
}

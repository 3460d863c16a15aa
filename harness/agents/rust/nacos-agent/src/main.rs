//! The connformance nacos-client agent over the real Rust SDK, crates.io `nacos-sdk` 0.8.3
//! (SPEC §4.3). A thin adapter: the SDK does the work; the agent starts its NamingService,
//! observes it and forwards one naming call on demand.
//!
//!     nacos-agent --servers 127.0.0.1:P[,...] --control-port C [--app-name X]
//!
//! What the SDK makes public, and so what this agent reports:
//!   - NamingServiceBuilder/ClientProps and the naming calls. The connection's listeners
//!     (connected_listener/disconnected_listener) and its grpc client are pub(crate), so the one
//!     window on the connection is the SDK's own `tracing` statements. The agent installs a
//!     tracing Layer (no other subscriber) and takes events, status, server and connection id
//!     from exactly these statements (nacos-sdk 0.8.3):
//!       common/remote/server_list/service.rs "Polling server selected: {host}:{port} (index N)"
//!         (debug) -> the server the next connection goes to (its main port: gRPC is port + 1000);
//!       common/remote/grpc/nacos_grpc_connection.rs
//!         "the new connection init completed. connection id :{id}" -> connected, RUNNING (once
//!           build() has returned: until then the application has no client; a build that fails
//!           - its first connection failed, or broke before build's closing health check - is
//!           SHUTDOWN with an error event, since the SDK's tasks end with it),
//!           server = the last selected server, connection_id = id;
//!         "create new connection." after a connection -> disconnected (the last server and
//!           id), UNHEALTHY (at start it only marks the first attempt);
//!         "create connection error, ..." -> connect_failed (the server selected for it);
//!         "health check failed..." -> UNHEALTHY and an error event;
//!       common/remote/grpc/handlers/default_handler.rs "unknown server request. type: T, ..."
//!         -> an error event naming T: the SDK has no handler for it (ConnectResetRequest is one)
//!         and answers nothing, so reset_received never occurs;
//!       any other WARN/ERROR record -> an error event.
//!     Every INFO-or-higher record, and the server selection, is also printed to stderr (the peer
//!     log).
//!   - meta: client_version = ClientProps' "Nacos-Rust-Client:0.8.3" (what the setup carries),
//!     app_name = the AppName label it sends (--app-name, else the SDK's "unknown"), tenant =
//!     "public" (naming/mod.rs: an empty namespace becomes DEFAULT_NAMESPACE in the setup),
//!     client_ip = local_ipaddress::get() or 127.0.0.1, the SDK's own lookup (common/util.rs
//!     LOCAL_IP, what it puts in metadata.clientIp); labels null (the SDK's label map is private).
//!   - POST /request: {"type": "list_services"} (default) is NamingService::get_service_list(1,
//!     10, None) -> one ServiceListRequest through the SDK's request path. error_code is null: the
//!     SDK's errors carry the server's message, not its code.
//!
//! Knobs: --app-name -> ClientProps::app_name (the setup's AppName label). The health check (every
//! 5 s, 3 s timeout, 3 tries) and the reconnect backoff are constants in the SDK. env_first is
//! off, so NACOS_CLIENT_* variables of the environment cannot redirect the agent.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use nacos_sdk::api::naming::{NamingService, NamingServiceBuilder};
use nacos_sdk::api::props::ClientProps;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::{Layer, Registry};

const LIBRARY: &str = "nacos-sdk (Rust) 0.8.3";
const CLIENT_VERSION: &str = "Nacos-Rust-Client:0.8.3";
const MAX_EVENTS: usize = 10_000;

fn epoch_ms() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0)
}

fn usage(message: &str) -> ! {
    eprintln!("nacos-agent: {message}");
    std::process::exit(2);
}

// ---- state ------------------------------------------------------------------------------------

struct State {
    status: &'static str,
    started: bool, // NamingServiceBuilder::build() returned Ok: the application has its client
    server: Option<String>,
    connection_id: Option<String>,
    selected: Option<String>, // the server the SDK picked for its next connection
    events: VecDeque<Value>,
    events_total: usize,
    meta: Value,
}

impl State {
    fn record(&mut self, kind: &str, server: Option<String>, detail: Value) {
        let event = json!({"t_ms": epoch_ms(), "kind": kind, "server": server, "detail": detail});
        eprintln!("nacos-agent: event {event}");
        if self.events.len() == MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(event);
        self.events_total += 1;
    }

    fn snapshot(&self, since: usize) -> Value {
        let dropped = self.events_total - self.events.len();
        let events: Vec<&Value> = self.events.iter().skip(since.saturating_sub(dropped)).collect();
        json!({"status": self.status, "server": self.server, "connection_id": self.connection_id,
               "events": events, "events_total": self.events_total, "meta": self.meta})
    }

    /// One statement of the SDK (its message and level) -> the contract's events and status.
    fn observe(&mut self, level: Level, message: &str) {
        if let Some(rest) = message.strip_prefix("Polling server selected: ") {
            self.selected = rest.split_whitespace().next().map(str::to_string);
        } else if let Some(id) = message.strip_prefix("the new connection init completed. connection id :") {
            let id = id.trim().to_string();
            if self.started {
                self.status = "RUNNING";
            }
            self.server = self.selected.clone();
            self.connection_id = Some(id.clone());
            self.record("connected", self.server.clone(), json!({"connection_id": id}));
        } else if message == "create new connection." {
            if let Some(id) = self.connection_id.take() {
                let server = self.server.take();
                if self.started {
                    self.status = "UNHEALTHY";
                }
                self.record("disconnected", server, json!({"connection_id": id}));
            }
        } else if message.starts_with("create connection error") {
            self.record("connect_failed", self.selected.clone(), json!({"reason": message}));
        } else if message.starts_with("health check failed") {
            if self.status == "RUNNING" {
                self.status = "UNHEALTHY";
            }
            self.record("error", self.server.clone(), json!({"what": "health check failed", "reason": message}));
        } else if let Some(rest) = message.strip_prefix("unknown server request. type: ") {
            let kind = rest.split(',').next().unwrap_or("").trim();
            self.record("error", self.server.clone(),
                        json!({"what": "unhandled server request", "type": kind, "reason": message}));
        } else if level <= Level::WARN {
            self.record("error", self.server.clone(), json!({"level": level.as_str(), "reason": message}));
        }
    }
}

type Shared = Arc<Mutex<State>>;

// ---- the SDK's statements ---------------------------------------------------------------------

struct Message(String);

impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0 = value.to_string();
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

struct SdkStatements(Shared);

impl<S: Subscriber> Layer<S> for SdkStatements {
    fn enabled(&self, meta: &tracing::Metadata<'_>, _: Context<'_, S>) -> bool {
        meta.target().starts_with("nacos_sdk") || *meta.level() <= Level::INFO
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let meta = event.metadata();
        let mut message = Message(String::new());
        event.record(&mut message);
        let level = *meta.level();
        let selection = message.0.starts_with("Polling server selected: ");
        if level <= Level::INFO || selection {
            eprintln!("{} {} {}: {}", epoch_ms() as u64, level, meta.target(), message.0);
        }
        if meta.target().starts_with("nacos_sdk") {
            self.0.lock().unwrap().observe(level, &message.0);
        }
    }
}

// ---- control HTTP (one request per connection, Connection: close) ----------------------------

struct Agent {
    state: Shared,
    naming: Mutex<Option<Arc<NamingService>>>,
    shutdown: Notify,
}

impl Agent {
    async fn request(&self, body: &Value) -> Value {
        let kind = body.get("type").and_then(Value::as_str).filter(|t| !t.is_empty()).unwrap_or("list_services");
        let naming = self.naming.lock().unwrap().clone();
        let started = Instant::now();
        let mut out = json!({"type": kind, "ok": false, "error_code": null});
        match naming {
            None => out["error"] = json!("library not started yet"),
            Some(_) if kind != "list_services" && kind != "ServiceListRequest" => {
                out["error"] = json!(format!("unsupported type {kind}; use list_services (the SDK's public API gives no per-call HealthCheck)"));
            }
            Some(naming) => match naming.get_service_list(1, 10, None).await {
                Ok((_, count)) => {
                    out["ok"] = json!(true);
                    out["services"] = json!(count);
                }
                Err(e) => out["error"] = json!(e.to_string()),
            },
        }
        out["ms"] = json!(started.elapsed().as_secs_f64() * 1000.0);
        out
    }

    async fn serve(self: Arc<Self>, stream: TcpStream) {
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        if reader.read_line(&mut line).await.is_err() {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, target) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            match reader.read_line(&mut header).await {
                Ok(0) | Err(_) => return,
                Ok(_) if header.trim().is_empty() => break,
                Ok(_) => {
                    if let Some((name, value)) = header.split_once(':')
                        && name.trim().eq_ignore_ascii_case("content-length")
                    {
                        length = value.trim().parse().unwrap_or(0);
                    }
                }
            }
        }
        let mut raw = vec![0u8; length.min(1 << 20)];
        if reader.read_exact(&mut raw).await.is_err() {
            return;
        }
        let (path, query) = target.split_once('?').unwrap_or((target.as_str(), ""));
        let (code, body) = match (method.as_str(), path) {
            ("GET", "/state") => {
                let since = query.split('&').find_map(|kv| kv.strip_prefix("since=")).unwrap_or("0");
                match since.parse::<usize>() {
                    Ok(n) => (200, self.state.lock().unwrap().snapshot(n)),
                    Err(_) => (400, json!({"error": format!("since must be a non-negative integer, got {since:?}")})),
                }
            }
            ("POST", "/request") => {
                let parsed: Result<Value, _> =
                    if raw.iter().all(u8::is_ascii_whitespace) { Ok(json!({})) } else { serde_json::from_slice(&raw) };
                match parsed {
                    Ok(v) if v.is_object() => (200, self.request(&v).await),
                    _ => (400, json!({"error": "body must be a JSON object"})),
                }
            }
            ("POST", "/shutdown") => (200, json!({"ok": true})), // stops once the answer is out
            (_, "/state" | "/request" | "/shutdown") => (405, json!({"error": "wrong method"})),
            _ => (404, json!({"error": format!("no route {path}")})),
        };
        let text = body.to_string();
        let reason = match code { 200 => "OK", 400 => "Bad Request", 404 => "Not Found", _ => "Method Not Allowed" };
        let response = format!("HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                                Connection: close\r\n\r\n{text}", text.len());
        let mut stream = reader.into_inner();
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
        if (method.as_str(), path) == ("POST", "/shutdown") {
            self.shutdown.notify_one();
        }
    }
}

// ---- main -------------------------------------------------------------------------------------

fn parse_servers(list: &str) -> Vec<String> {
    let servers: Vec<String> = list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect();
    if servers.is_empty() {
        usage(&format!("no servers in {list:?}"));
    }
    for server in &servers {
        let (host, port) = server.rsplit_once(':').unwrap_or_else(|| usage(&format!("server {server:?}: expected ip:port")));
        port.parse::<u16>().unwrap_or_else(|_| usage(&format!("server {server:?}: bad port")));
        let ip: IpAddr = host.parse().unwrap_or_else(|_| usage(&format!("server {server:?}: not an IP address")));
        let allowed = match ip {
            IpAddr::V4(v4) => v4.is_loopback() || (v4.octets()[0] == 198 && (v4.octets()[1] & 0xfe) == 18),
            IpAddr::V6(_) => false,
        };
        if !allowed {
            usage(&format!("server {server:?} is not on loopback (127.0.0.0/8) or in a harness namespace (198.18.0.0/15)"));
        }
    }
    servers
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mut servers, mut control_port, mut app_name) = (None, None, None);
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).cloned().unwrap_or_else(|| usage(&format!("flag {} needs a value", args[i])));
        match args[i].as_str() {
            "--servers" => servers = Some(parse_servers(&value)),
            "--control-port" => control_port = Some(value.parse::<u16>().unwrap_or_else(|_| usage("bad --control-port"))),
            "--app-name" => app_name = Some(value),
            other => usage(&format!("unknown flag {other}")),
        }
        i += 2;
    }
    let (Some(servers), Some(control_port)) = (servers, control_port) else {
        usage("usage: nacos-agent --servers IP:PORT[,...] --control-port C [--app-name X]")
    };

    let state: Shared = Arc::new(Mutex::new(State {
        status: "STARTING", started: false, server: None, connection_id: None, selected: None, events: VecDeque::new(),
        events_total: 0,
        meta: json!({"client_ip": local_ipaddress::get().unwrap_or_else(|| "127.0.0.1".into()), "client_version": CLIENT_VERSION, "labels": null,
                     "app_name": app_name.clone().unwrap_or_else(|| "unknown".into()), "tenant": "public",
                     "library": LIBRARY}),
    }));
    let subscriber = Registry::default().with(SdkStatements(state.clone()));
    tracing::subscriber::set_global_default(subscriber).expect("the only tracing subscriber");

    let listener = TcpListener::bind(("127.0.0.1", control_port)).await
        .unwrap_or_else(|e| { eprintln!("nacos-agent: control port {control_port}: {e}"); std::process::exit(1) });
    let agent = Arc::new(Agent { state: state.clone(), naming: Mutex::new(None), shutdown: Notify::new() });
    let server_agent = agent.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(server_agent.clone().serve(stream));
        }
    });
    eprintln!("nacos-agent: control on 127.0.0.1:{control_port}, {LIBRARY}, servers {}", servers.join(","));

    let start_agent = agent.clone();
    tokio::spawn(async move {
        let mut props = ClientProps::new().env_first(false).server_addr(servers.join(",")).namespace("");
        if let Some(name) = app_name {
            props = props.app_name(name);
        }
        match NamingServiceBuilder::new(props).build().await {
            Ok(naming) => {
                *start_agent.naming.lock().unwrap() = Some(Arc::new(naming));
                let mut st = start_agent.state.lock().unwrap();
                st.started = true;
                st.status = if st.connection_id.is_some() { "RUNNING" } else { "UNHEALTHY" };
            }
            Err(e) => {
                // build() gave up (its first connection failed, or broke before its closing
                // health check): the SDK's tasks end with it, so the client is gone for good.
                let mut st = start_agent.state.lock().unwrap();
                st.status = "SHUTDOWN";
                st.record("error", None, json!({"what": "library start failed", "reason": e.to_string()}));
            }
        }
    });

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = agent.shutdown.notified() => {}
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    let naming = agent.naming.lock().unwrap().take();
    drop(naming); // the SDK has no close call in 0.8.3: its tasks end with the runtime
    {
        let mut st = state.lock().unwrap();
        st.status = "SHUTDOWN";
        st.server = None;
        st.connection_id = None;
    }
    eprintln!("nacos-agent: shut down");
    std::process::exit(0);
}

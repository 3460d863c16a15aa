//! The connformance http-client agent for reqwest (SPEC.md §4.4).
//!
//!     reqwest-agent --url URL[,URL2] [--url URL3] --plan PLAN.json [--knob-name value ...]
//!
//! A thin adapter over one `reqwest::Client` (HTTP/1.1 only); the pool under test is reqwest's own
//! (hyper-util's legacy client pool). Knobs, from the plan's "knobs" or flags (flags win):
//!
//!   max_idle_per_host -> ClientBuilder::pool_max_idle_per_host (default usize::MAX: no cap)
//!   idle_timeout_ms   -> ClientBuilder::pool_idle_timeout (default 90 s)
//!   read_error_body   -> read (true, default) or keep unread (false) the body of a >= 400
//!                        response; unread, the connection is never returned to the pool
//!   block_when_full   -> false only: reqwest has no connection limit to wait at
//!   max_conns_per_host, max_idle_total, keepalive -> unsupported (no such setting)
//!
//! Records have "reused": null and "local_port": null (reqwest exposes neither). cancel_burst
//! drops the request's future after cancel_after_ms (how a Rust application cancels); a phase's
//! "timeout_ms" is RequestBuilder::timeout. Unsupported knobs print {"unsupported": [...],
//! "detail": {...}} and exit 3; a bad command line or plan exits 2. Only loopback (127.0.0.0/8)
//! and harness namespace (198.18.0.0/15) hosts.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::Ipv4Addr;
use std::process::exit;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

const EXIT_USAGE: i32 = 2;
const EXIT_UNSUPPORTED: i32 = 3;
const KNOBS: [&str; 7] = ["max_conns_per_host", "max_idle_per_host", "max_idle_total", "idle_timeout_ms",
                          "keepalive", "block_when_full", "read_error_body"];

struct Phase {
    op: String,
    n: u64,
    path: String,
    method: reqwest::Method,
    body: Option<String>,
    target: usize,
    targets: Vec<usize>, // spread_burst: request i goes to targets[i % len]
    ms: u64,
    cancel_after_ms: u64,
    timeout_ms: u64,
}

fn usage(message: &str) -> ! {
    eprintln!("reqwest-agent: {message}");
    exit(EXIT_USAGE)
}

fn now_ms() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0)
}

fn emit(line: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn knob_from_text(text: &str) -> Value {
    match text {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => text.parse::<i64>().map(Value::from).unwrap_or_else(|_| Value::String(text.to_string())),
    }
}

fn check_host(url: &str) {
    let parsed = reqwest::Url::parse(url).unwrap_or_else(|e| usage(&format!("{url}: {e}")));
    let ok = match parsed.host_str().and_then(|h| h.parse::<Ipv4Addr>().ok()) {
        Some(ip) => ip.octets()[0] == 127 || (ip.octets()[0] == 198 && (ip.octets()[1] == 18 || ip.octets()[1] == 19)),
        None => false,
    };
    if !ok {
        usage(&format!("{url}: only 127.0.0.0/8 and 198.18.0.0/15 addresses (no names) are allowed"));
    }
}

fn int_knob(name: &str, value: &Value, min: i64) -> i64 {
    match value.as_i64() {
        Some(n) if n >= min => n,
        _ => usage(&format!("{name}: expected an integer >= {min}, got {value}")),
    }
}

fn bool_knob(name: &str, value: &Value) -> bool {
    value.as_bool().unwrap_or_else(|| usage(&format!("{name}: expected true or false, got {value}")))
}

fn parse_phases(raw: Option<&Value>, nurls: usize) -> Vec<Phase> {
    let Some(raw) = raw else { return Vec::new() };
    let list = raw.as_array().unwrap_or_else(|| usage("plan.phases: expected a list"));
    list.iter().enumerate().map(|(idx, p)| {
        let where_ = format!("plan.phases[{idx}]");
        let m = p.as_object().unwrap_or_else(|| usage(&format!("{where_}: expected an object")));
        for key in m.keys() {
            if !["op", "n", "path", "method", "body", "target", "targets", "ms", "cancel_after_ms", "timeout_ms"].contains(&key.as_str()) {
                usage(&format!("{where_}: unknown key {key}"));
            }
        }
        let op = m.get("op").and_then(Value::as_str).unwrap_or("").to_string();
        if !["burst", "sequential", "sleep", "cancel_burst", "spread_burst"].contains(&op.as_str()) {
            usage(&format!("{where_}: op must be burst, sequential, sleep, cancel_burst or spread_burst, got {op:?}"));
        }
        let int = |k: &str| m.get(k).map(|v| int_knob(&format!("{where_}.{k}"), v, 0) as u64).unwrap_or(0);
        let method = m.get("method").and_then(Value::as_str).unwrap_or("GET");
        let phase = Phase {
            op,
            n: int("n"),
            path: m.get("path").and_then(Value::as_str).unwrap_or("").to_string(),
            method: reqwest::Method::from_bytes(method.as_bytes()).unwrap_or_else(|_| usage(&format!("{where_}.method: {method}"))),
            body: m.get("body").and_then(Value::as_str).map(str::to_string),
            target: int("target") as usize,
            targets: match m.get("targets") {
                None => Vec::new(),
                Some(v) => v.as_array().filter(|a| !a.is_empty())
                    .unwrap_or_else(|| usage(&format!("{where_}.targets: expected a non-empty list")))
                    .iter().map(|t| int_knob(&format!("{where_}.targets[]"), t, 0) as usize).collect(),
            },
            ms: int("ms"),
            cancel_after_ms: int("cancel_after_ms"),
            timeout_ms: int("timeout_ms"),
        };
        if phase.op == "spread_burst" && phase.targets.is_empty() {
            usage(&format!("{where_}: spread_burst needs targets"));
        }
        for &t in if phase.targets.is_empty() { std::slice::from_ref(&phase.target) } else { &phase.targets[..] } {
            if t >= nurls {
                usage(&format!("{where_}: target {t} is not an index of the {nurls} --url value(s)"));
            }
        }
        phase
    }).collect()
}

struct Agent {
    client: reqwest::Client,
    read_error_body: bool,
    unread: Mutex<Vec<reqwest::Response>>, // kept so their connections stay held
}

impl Agent {
    async fn request(&self, base: &str, ph: &Phase) -> (Option<u16>, Option<String>) {
        let url = format!("{}/{}", base.trim_end_matches('/'), ph.path.trim_start_matches('/'));
        let mut req = self.client.request(ph.method.clone(), url);
        if let Some(body) = &ph.body {
            req = req.body(body.clone());
        }
        if ph.timeout_ms > 0 {
            req = req.timeout(Duration::from_millis(ph.timeout_ms));
        }
        let exchange = async {
            let resp = req.send().await?;
            let status = resp.status().as_u16();
            if status < 400 || self.read_error_body {
                resp.bytes().await?; // to EOF: the connection returns to the pool
            } else {
                self.unread.lock().unwrap().push(resp);
            }
            Ok::<u16, reqwest::Error>(status)
        };
        let outcome = if ph.op == "cancel_burst" {
            match tokio::time::timeout(Duration::from_millis(ph.cancel_after_ms), exchange).await {
                Ok(r) => r,
                Err(_) => return (None, Some(format!("canceled: after {} ms", ph.cancel_after_ms))),
            }
        } else {
            exchange.await
        };
        match outcome {
            Ok(status) => (Some(status), None),
            Err(e) => (None, Some(format!("{e:?}"))),
        }
    }

    async fn one(&self, urls: &[String], idx: usize, i: u64, ph: &Phase) {
        let start = now_ms();
        let target = if ph.targets.is_empty() { ph.target } else { ph.targets[i as usize % ph.targets.len()] };
        let (status, error) = self.request(&urls[target], ph).await;
        emit(&json!({"phase": idx, "i": i, "start_ms": start, "end_ms": now_ms(), "status": status,
                     "error": error, "reused": null, "local_port": null}));
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut urls: Vec<String> = Vec::new();
    let mut plan_path: Option<String> = None;
    let mut flag_knobs = Map::new();
    let mut i = 0;
    while i < args.len() {
        let flag = &args[i];
        let value = args.get(i + 1).unwrap_or_else(|| usage(&format!("flag {flag} needs a value")));
        let knob = flag.trim_start_matches("--").replace('-', "_");
        if flag == "--url" {
            urls.extend(value.split(',').map(str::trim).filter(|u| !u.is_empty()).map(str::to_string));
        } else if flag == "--plan" {
            plan_path = Some(value.clone());
        } else if flag.starts_with("--") && KNOBS.contains(&knob.as_str()) {
            flag_knobs.insert(knob, knob_from_text(value));
        } else {
            usage(&format!("unknown flag {flag}"));
        }
        i += 2;
    }
    let plan_path = plan_path.unwrap_or_else(|| usage("usage: reqwest-agent --url URL [--url URL2] --plan PLAN.json [--knob-name value ...]"));
    if urls.is_empty() {
        usage("at least one --url is required");
    }
    urls.iter().for_each(|u| check_host(u));
    let text = std::fs::read_to_string(&plan_path).unwrap_or_else(|e| usage(&format!("{plan_path}: {e}")));
    let plan: Value = serde_json::from_str(&text).unwrap_or_else(|e| usage(&format!("{plan_path}: {e}")));
    let plan = plan.as_object().unwrap_or_else(|| usage("plan: expected an object"));
    for key in plan.keys() {
        if key != "knobs" && key != "phases" {
            usage(&format!("plan: unknown key {key} (knobs, phases)"));
        }
    }
    let mut knobs: BTreeMap<String, Value> = plan.get("knobs").and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default();
    knobs.extend(flag_knobs);
    knobs.retain(|_, v| !v.is_null());
    let phases = parse_phases(plan.get("phases"), urls.len());

    let mut builder = reqwest::Client::builder().http1_only().redirect(reqwest::redirect::Policy::none()).no_proxy();
    let mut unsupported: BTreeMap<String, String> = BTreeMap::new();
    let mut read_error_body = true;
    for (name, value) in &knobs {
        match name.as_str() {
            "max_idle_per_host" => builder = builder.pool_max_idle_per_host(int_knob(name, value, 0) as usize),
            "idle_timeout_ms" => builder = builder.pool_idle_timeout(Duration::from_millis(int_knob(name, value, 1) as u64)),
            "read_error_body" => read_error_body = bool_knob(name, value),
            "block_when_full" => {
                if bool_knob(name, value) {
                    unsupported.insert(name.clone(), "reqwest has no connection limit to wait at".into());
                }
            }
            "max_conns_per_host" | "max_idle_total" | "keepalive" => {
                unsupported.insert(name.clone(), "reqwest has no such setting (pool settings: pool_max_idle_per_host, pool_idle_timeout)".into());
            }
            _ => {
                unsupported.insert(name.clone(), "not a knob of the agent contract".into());
            }
        }
    }
    if !unsupported.is_empty() {
        emit(&json!({"unsupported": unsupported.keys().collect::<Vec<_>>(), "detail": unsupported}));
        exit(EXIT_UNSUPPORTED);
    }
    let client = builder.build().unwrap_or_else(|e| usage(&format!("reqwest client: {e}")));
    eprintln!("reqwest-agent: reqwest 0.13 Client, knobs {knobs:?}");
    let agent = Agent { client, read_error_body, unread: Mutex::new(Vec::new()) };
    for (idx, ph) in phases.iter().enumerate() {
        match ph.op.as_str() {
            "sleep" => tokio::time::sleep(Duration::from_millis(ph.ms)).await,
            "sequential" => {
                for i in 0..ph.n {
                    agent.one(&urls, idx, i, ph).await;
                }
            }
            _ => {
                futures::future::join_all((0..ph.n).map(|i| agent.one(&urls, idx, i, ph))).await;
            }
        }
    }
    emit(&json!({"done": true}));
    exit(0);
}

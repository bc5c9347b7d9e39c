//! `loadgen`: an HTTP/1.1 load generator for loopback benchmarks.
//!
//! N connections (hyper's client connection API, one keep-alive TCP connection each),
//! each with one request in flight. A warm-up runs first and is not recorded; then the
//! measured window runs for a fixed time. Any answer that is not 2xx (or 3xx with
//! `--ok-redirects`) counts as an error (and is not in the latency histogram); a broken
//! connection counts as an error and is reopened.
//!
//! Modes:
//! - closed loop (default): each connection sends the next request as soon as the
//!   answer to the previous one is read; latency = send → answer read.
//! - open loop (`--rate R`): requests are scheduled at fixed times, R per second in all,
//!   spread evenly over the connections (connection k sends its j-th request at
//!   `t0 + (j·N + k)/R`, as wrk2 does). When a connection is still busy at a request's
//!   scheduled time, the request goes out as soon as it is free and its latency counts
//!   from the *scheduled* time, so a slow answer is not hidden by the requests it held
//!   back (no coordinated omission). When the connection was free, latency counts from
//!   the actual send (tokio's timer wakes up to ~1 ms late; that is the client's delay,
//!   not the server's).
//! - exact count (`--total N`): exactly N requests (no warm-up, all measured), closed
//!   loop, ending when all N are answered or the time limit (`--duration`) passes;
//!   `"complete"` in the output says whether every one of them got an answer.
//!
//! `--paths FILE`: the request paths come from FILE (one `/path` per line), taken in
//! turn by all connections (request i gets line i mod lines); the URL then gives only
//! the scheme and authority.
//!
//! Bounded: only `http://127.0.0.1`/`localhost` URLs, a time limit, a total request cap,
//! a per-request timeout and a cap on connection errors.
//!
//! Prints one JSON line on stdout:
//! `{"label", "mode", "connections", "seconds", "requests", "errors", "rps", "p50_us",
//! "p90_us", "p99_us", "p999_us", "max_us", "mean_us", "status", "sent", "complete",
//! "target_rps"}`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

#[derive(Parser, Debug)]
#[command(name = "loadgen", about = "HTTP load generator (loopback only)")]
struct Args {
    /// The URL to GET, e.g. http://127.0.0.1:8080/v1/contacts/ct_... (with `--paths`:
    /// only its scheme and authority are used).
    url: String,
    /// A file of request paths (one `/path` per line), cycled through.
    #[arg(long)]
    paths: Option<std::path::PathBuf>,
    /// Open loop: this many requests per second in all, at fixed times; latency from
    /// the scheduled time when the connection was busy (no coordinated omission).
    #[arg(long)]
    rate: Option<f64>,
    /// Exactly this many requests (no warm-up; `--duration` is then a time limit).
    #[arg(long)]
    total: Option<u64>,
    /// Count 3xx answers as successes (a click answers 302).
    #[arg(long)]
    ok_redirects: bool,
    /// Concurrent connections (each one request in flight).
    #[arg(short, long, default_value_t = 32)]
    connections: usize,
    /// Measured seconds.
    #[arg(short, long, default_value_t = 15.0)]
    duration: f64,
    /// Warm-up seconds (not recorded).
    #[arg(short, long, default_value_t = 3.0)]
    warmup: f64,
    /// Extra request headers, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// Worker threads of the client's runtime.
    #[arg(short, long, default_value_t = 2)]
    threads: usize,
    /// A label copied into the JSON output.
    #[arg(short, long, default_value = "")]
    label: String,
    /// Hard cap on requests, warm-up included.
    #[arg(long, default_value_t = 50_000_000)]
    max_requests: u64,
    /// Per-request timeout, seconds.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
}

struct Target {
    authority: String,
    /// The paths requested in turn (one when `--paths` is not given).
    paths: Vec<String>,
    headers: Vec<(hyper::header::HeaderName, hyper::header::HeaderValue)>,
}

/// Reads a `--paths` file: non-empty lines, each starting with `/`.
fn read_paths(file: &std::path::Path) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let paths: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if paths.is_empty() {
        bail!("{} has no paths", file.display());
    }
    if let Some(bad) = paths.iter().find(|p| !p.starts_with('/')) {
        bail!(
            "every line of {} must be a /path, got {bad:?}",
            file.display()
        );
    }
    Ok(paths)
}

fn parse_target(args: &Args) -> Result<Target> {
    let uri: hyper::Uri = args.url.parse().context("parsing the URL")?;
    if uri.scheme_str() != Some("http") {
        bail!("only http:// URLs");
    }
    let host = uri.host().ok_or_else(|| anyhow!("the URL has no host"))?;
    if !matches!(host, "127.0.0.1" | "localhost" | "[::1]" | "::1") {
        bail!("loadgen only targets loopback addresses (127.0.0.1, localhost, [::1])");
    }
    let authority = uri
        .authority()
        .ok_or_else(|| anyhow!("the URL has no authority"))?
        .to_string();
    let paths = match &args.paths {
        Some(file) => read_paths(file)?,
        None => vec![
            uri.path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| "/".into()),
        ],
    };
    let mut headers = Vec::new();
    for h in &args.headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| anyhow!("a header is `Name: value`, got {h:?}"))?;
        headers.push((
            name.trim().parse().context("header name")?,
            value.trim().parse().context("header value")?,
        ));
    }
    Ok(Target {
        authority,
        paths,
        headers,
    })
}

struct Shared {
    target: Target,
    /// When the run (warm-up included) began: the open loop's schedule starts here.
    start: Instant,
    measure_from: Instant,
    end: Instant,
    timeout: Duration,
    max_requests: u64,
    sent: AtomicU64,
    conn_errors: AtomicU64,
    ok_redirects: bool,
    /// Open loop: the connections, and the interval between two requests of one.
    schedule: Option<Schedule>,
}

#[derive(Clone, Copy)]
struct Schedule {
    connections: u64,
    /// Seconds between two requests in all (1 / rate).
    interval: f64,
}

const MAX_CONN_ERRORS: u64 = 10_000;

struct WorkerOut {
    hist: Histogram<u64>,
    ok: u64,
    errors: u64,
    status: BTreeMap<u16, u64>,
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn connect(shared: &Shared) -> Result<Sender> {
    let stream = TcpStream::connect(&shared.target.authority)
        .await
        .with_context(|| format!("connecting to {}", shared.target.authority))?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

async fn worker(shared: Arc<Shared>, index: u64) -> Result<WorkerOut> {
    let mut out = WorkerOut {
        hist: Histogram::new_with_bounds(1, 60_000_000, 3)?,
        ok: 0,
        errors: 0,
        status: BTreeMap::new(),
    };
    let mut sender: Option<Sender> = None;
    // Open loop: this connection's j-th request is due at t0 + (j·N + index)·interval.
    let t0 = shared.start;
    let mut j = 0u64;
    let mut prev_done: Option<Instant> = None;
    loop {
        let scheduled = shared.schedule.map(|sch| {
            t0 + Duration::from_secs_f64((j * sch.connections + index) as f64 * sch.interval)
        });
        j += 1;
        if let Some(at) = scheduled {
            if at >= shared.end {
                break;
            }
            tokio::time::sleep_until(at).await;
        }
        let now = Instant::now();
        let n = shared.sent.fetch_add(1, Ordering::Relaxed);
        if now >= shared.end || n >= shared.max_requests {
            break;
        }
        let s = match sender.as_mut() {
            Some(s) => s,
            None => match connect(&shared).await {
                Ok(s) => sender.insert(s),
                Err(e) => {
                    if shared.conn_errors.fetch_add(1, Ordering::Relaxed) >= MAX_CONN_ERRORS {
                        return Err(e.context("too many connection errors"));
                    }
                    if Instant::now() >= shared.measure_from {
                        out.errors += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let paths = &shared.target.paths;
        let path = &paths[(n % paths.len() as u64) as usize];
        let mut req = Request::get(path.as_str())
            .header(hyper::header::HOST, shared.target.authority.as_str())
            .body(Empty::<Bytes>::new())?;
        for (k, v) in &shared.target.headers {
            req.headers_mut().insert(k.clone(), v.clone());
        }
        let sent_at = Instant::now();
        // Latency counts from the scheduled time when the connection was still busy with
        // the previous request then (the server held this one back), else from the send.
        let start = match scheduled {
            Some(at) if prev_done.is_some_and(|d| d > at) => at,
            _ => sent_at,
        };
        let result = tokio::time::timeout(shared.timeout, async {
            s.ready().await?;
            let resp = s.send_request(req).await?;
            let status = resp.status().as_u16();
            resp.into_body().collect().await?;
            Ok::<u16, hyper::Error>(status)
        })
        .await;
        let done = Instant::now();
        prev_done = Some(done);
        let measured = start >= shared.measure_from && done <= shared.end;
        match result {
            Ok(Ok(status)) => {
                if measured {
                    *out.status.entry(status).or_default() += 1;
                    let ok = (200..300).contains(&status)
                        || (shared.ok_redirects && (300..400).contains(&status));
                    if ok {
                        out.ok += 1;
                        let us = u64::try_from((done - start).as_micros()).unwrap_or(u64::MAX);
                        out.hist.saturating_record(us.max(1));
                    } else {
                        out.errors += 1;
                    }
                }
            }
            Ok(Err(_)) | Err(_) => {
                // Broken connection or timeout: count it, reconnect.
                if measured {
                    out.errors += 1;
                }
                sender = None;
                if shared.conn_errors.fetch_add(1, Ordering::Relaxed) >= MAX_CONN_ERRORS {
                    bail!("too many connection errors");
                }
            }
        }
    }
    Ok(out)
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.connections == 0 || args.connections > 1024 {
        bail!("--connections must be 1..=1024");
    }
    let duration_ok = args.duration > 0.0 && args.duration <= 600.0;
    if !duration_ok || !(0.0..=120.0).contains(&args.warmup) {
        bail!("--duration must be in (0, 600] and --warmup in [0, 120]");
    }
    if let Some(rate) = args.rate
        && !(rate > 0.0 && rate <= 10_000_000.0)
    {
        bail!("--rate must be in (0, 10000000]");
    }
    if args.total == Some(0) {
        bail!("--total must be at least 1");
    }
    if args.total.is_some() && args.rate.is_some() {
        bail!("--total and --rate do not go together");
    }
    let mode = match (args.rate, args.total) {
        (Some(_), _) => "open",
        (_, Some(_)) => "total",
        _ => "closed",
    };
    // An exact count has no warm-up: every request is one of the N.
    let warmup = if args.total.is_some() {
        0.0
    } else {
        args.warmup
    };
    let max_requests = args.total.unwrap_or(args.max_requests);
    let target = parse_target(&args)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    rt.block_on(async {
        let now = Instant::now();
        let measure_from = now + Duration::from_secs_f64(warmup);
        let shared = Arc::new(Shared {
            target,
            start: now,
            measure_from,
            end: measure_from + Duration::from_secs_f64(args.duration),
            timeout: Duration::from_secs_f64(args.timeout),
            max_requests,
            sent: AtomicU64::new(0),
            conn_errors: AtomicU64::new(0),
            ok_redirects: args.ok_redirects,
            schedule: args.rate.map(|rate| Schedule {
                connections: args.connections as u64,
                interval: 1.0 / rate,
            }),
        });
        let tasks: Vec<_> = (0..args.connections as u64)
            .map(|k| tokio::spawn(worker(shared.clone(), k)))
            .collect();
        let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
        let (mut ok, mut errors) = (0u64, 0u64);
        let mut status: BTreeMap<u16, u64> = BTreeMap::new();
        for t in tasks {
            let out = t.await.context("a worker panicked")??;
            hist.add(&out.hist)?;
            ok += out.ok;
            errors += out.errors;
            for (k, v) in out.status {
                *status.entry(k).or_default() += v;
            }
        }
        // An exact count ends when its N requests are answered: its rate is over the
        // time it took; the other modes run the fixed window.
        let secs = if args.total.is_some() {
            measure_from.elapsed().as_secs_f64()
        } else {
            args.duration
        };
        let sent = shared.sent.load(Ordering::Relaxed).min(max_requests);
        let line = serde_json::json!({
            "label": args.label,
            "mode": mode,
            "connections": args.connections,
            "threads": args.threads,
            "seconds": secs,
            "requests": ok,
            "errors": errors,
            "rps": ok as f64 / secs,
            "target_rps": args.rate,
            "p50_us": hist.value_at_quantile(0.50),
            "p90_us": hist.value_at_quantile(0.90),
            "p99_us": hist.value_at_quantile(0.99),
            "p999_us": hist.value_at_quantile(0.999),
            "max_us": hist.max(),
            "mean_us": hist.mean(),
            "status": status.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
            "sent": sent,
            "complete": args.total.map(|n| ok + errors == n && sent == n),
        });
        println!("{line}");
        Ok(())
    })
}

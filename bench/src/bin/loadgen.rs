//! `loadgen`: a closed-loop HTTP/1.1 load generator for loopback benchmarks.
//!
//! N connections (hyper's client connection API, one keep-alive TCP connection each)
//! each send a request, read the whole answer, record its latency, and send the next.
//! A warm-up runs first and is not recorded; then the measured window runs for a fixed
//! time. Any answer that is not 2xx counts as an error (and is not in the latency
//! histogram); a broken connection counts as an error and is reopened.
//!
//! Bounded: only `http://127.0.0.1`/`localhost` URLs, a time limit, a total request cap,
//! a per-request timeout and a cap on connection errors.
//!
//! Prints one JSON line on stdout:
//! `{"label", "connections", "seconds", "requests", "errors", "rps", "p50_us", "p90_us",
//! "p99_us", "max_us", "mean_us", "status"}`.

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
#[command(
    name = "loadgen",
    about = "closed-loop HTTP load generator (loopback only)"
)]
struct Args {
    /// The URL to GET, e.g. http://127.0.0.1:8080/v1/contacts/ct_...
    url: String,
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
    path: String,
    headers: Vec<(hyper::header::HeaderName, hyper::header::HeaderValue)>,
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
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
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
        path,
        headers,
    })
}

struct Shared {
    target: Target,
    measure_from: Instant,
    end: Instant,
    timeout: Duration,
    max_requests: u64,
    sent: AtomicU64,
    conn_errors: AtomicU64,
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

async fn worker(shared: Arc<Shared>) -> Result<WorkerOut> {
    let mut out = WorkerOut {
        hist: Histogram::new_with_bounds(1, 60_000_000, 3)?,
        ok: 0,
        errors: 0,
        status: BTreeMap::new(),
    };
    let mut sender: Option<Sender> = None;
    loop {
        let now = Instant::now();
        if now >= shared.end || shared.sent.fetch_add(1, Ordering::Relaxed) >= shared.max_requests {
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
        let mut req = Request::get(shared.target.path.as_str())
            .header(hyper::header::HOST, shared.target.authority.as_str())
            .body(Empty::<Bytes>::new())?;
        for (k, v) in &shared.target.headers {
            req.headers_mut().insert(k.clone(), v.clone());
        }
        let start = Instant::now();
        let result = tokio::time::timeout(shared.timeout, async {
            s.ready().await?;
            let resp = s.send_request(req).await?;
            let status = resp.status().as_u16();
            resp.into_body().collect().await?;
            Ok::<u16, hyper::Error>(status)
        })
        .await;
        let done = Instant::now();
        let measured = start >= shared.measure_from && done <= shared.end;
        match result {
            Ok(Ok(status)) => {
                if measured {
                    *out.status.entry(status).or_default() += 1;
                    if (200..300).contains(&status) {
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
    let target = parse_target(&args)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    rt.block_on(async {
        let now = Instant::now();
        let measure_from = now + Duration::from_secs_f64(args.warmup);
        let shared = Arc::new(Shared {
            target,
            measure_from,
            end: measure_from + Duration::from_secs_f64(args.duration),
            timeout: Duration::from_secs_f64(args.timeout),
            max_requests: args.max_requests,
            sent: AtomicU64::new(0),
            conn_errors: AtomicU64::new(0),
        });
        let tasks: Vec<_> = (0..args.connections)
            .map(|_| tokio::spawn(worker(shared.clone())))
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
        let secs = args.duration;
        let line = serde_json::json!({
            "label": args.label,
            "connections": args.connections,
            "threads": args.threads,
            "seconds": secs,
            "requests": ok,
            "errors": errors,
            "rps": ok as f64 / secs,
            "p50_us": hist.value_at_quantile(0.50),
            "p90_us": hist.value_at_quantile(0.90),
            "p99_us": hist.value_at_quantile(0.99),
            "max_us": hist.max(),
            "mean_us": hist.mean(),
            "status": status.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
        });
        println!("{line}");
        Ok(())
    })
}

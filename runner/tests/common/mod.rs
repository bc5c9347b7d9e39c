//! Starting the real `mailpilot` binary for the process tests.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `mailpilot serve`, and what it printed up to "ready".
pub struct Server {
    pub child: Child,
    pub url: String,
    pub stderr_lines: Vec<String>,
}

/// Starts `mailpilot` on `data` with the extra environment `env`, and waits (at most
/// 30 s) until it says it is ready.
pub fn serve(data: &std::path::Path, env: &[(&str, String)]) -> Server {
    let port = free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_mailpilot"));
    command
        .env("MAILPILOT_ADDR", format!("127.0.0.1:{port}"))
        .env("MAILPILOT_DATA", data)
        .env("MAILPILOT_KEY_RATE", "0")
        .env_remove("MAILPILOT_PUBLIC_URL")
        .stderr(Stdio::piped())
        .stdout(Stdio::null());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("mailpilot starts");
    let stderr = child.stderr.take().unwrap();
    let mut lines = vec![];
    let mut reader = BufReader::new(stderr);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || Instant::now() > deadline {
            panic!("server stopped before it was ready: {lines:?}");
        }
        let done = line.contains("press Ctrl-C");
        lines.push(line);
        if done {
            break;
        }
    }
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in reader.lines() {});
    Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
        stderr_lines: lines,
    }
}

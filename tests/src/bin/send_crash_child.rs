//! A child process for the crash-window test (`tests/tests/crash.rs`): the runner on a
//! data dir, whose provider writes each message it accepts to `accepted.log` (fsynced)
//! and then hangs, so the test can `SIGKILL` the process between the provider's
//! acceptance and the sender's record of it. Prints `READY <url> <api key>` and then
//! `SENT <message id>` on stdout.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use mailpilot_runner::{DeliverySettings, Settings};
use mailpilot_shared::ports::provider::{Accepted, OutgoingMessage, Provider, SendError};
use mailpilot_shared::usecases::send::StaticDirectory;
use mailpilot_shared::usecases::senders::LOCAL_SENDER_ID;

struct HangAfterAccepting(PathBuf);

#[async_trait]
impl Provider for HangAfterAccepting {
    fn kind(&self) -> &'static str {
        "hang"
    }

    async fn send(&self, message: &OutgoingMessage) -> Result<Accepted, SendError> {
        let id = message.parts.message_id.clone();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.0)
            .expect("accepted.log");
        writeln!(f, "{id}").expect("write");
        f.sync_all().expect("fsync");
        println!("SENT {id}");
        std::io::stdout().flush().expect("flush");
        // The provider has the message; we die before recording it.
        std::future::pending::<()>().await;
        unreachable!()
    }

    async fn verify(&self) -> Result<(), SendError> {
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let data = PathBuf::from(std::env::args().nth(1).expect("data dir argument"));
    let provider = Arc::new(HangAfterAccepting(data.join("accepted.log")));
    let directory = Arc::new(StaticDirectory::default());
    let running = mailpilot_runner::start(Settings {
        addr: "127.0.0.1:0".into(),
        data_dir: data.clone(),
        public_url: None,
        link_keys: None,
        admin_token: None,
        key_rate: 0,
        demo: true,
        delivery: DeliverySettings {
            workers: 1,
            directory: Some(directory.clone()),
            ..DeliverySettings::default()
        },
    })
    .await?;
    let demo = running.demo.clone().expect("a fresh data dir");
    directory.insert(
        &demo.workspace_id,
        mailpilot_tests::delivery::route(LOCAL_SENDER_ID, provider),
    );
    println!("READY {} {}", running.url(), demo.api_key);
    std::io::stdout().flush()?;
    std::future::pending::<()>().await;
    Ok(())
}

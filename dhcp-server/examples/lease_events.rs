//! A consumer of the lease events the NATS history sink publishes: a durable pull
//! consumer on the site's stream, filtered to one kind of event, printing each event and
//! acknowledging it. Durable: stopped and started again, it resumes after the last event
//! it acknowledged (docs/history-nats.md).
//!
//! `cargo run --example lease_events -- --server nats://198.18.0.1:4222 --site east`

use std::process::ExitCode;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use clap::Parser;
use futures_util::StreamExt;

#[derive(Parser)]
#[command(about = "Print a site's lease events from NATS JetStream, durably")]
struct Args {
    /// A NATS server of the cluster.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    server: String,
    /// The site whose stream to read (`dhcp-<site>`, as the sink names it).
    #[arg(long)]
    site: String,
    /// The kind of event (granted, renewed, released, ...), or `>` for all.
    #[arg(long, default_value = "granted")]
    event: String,
    /// The consumer's durable name; another name starts again from the oldest event.
    #[arg(long, default_value = "lease-events")]
    durable: String,
    /// Stop after this many events (default: run until interrupted).
    #[arg(long)]
    count: Option<u64>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lease_events: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> Result<(), async_nats::Error> {
    let client = async_nats::connect(&args.server).await?;
    let js = jetstream::new(client);
    let stream = js.get_stream(format!("dhcp-{}", args.site)).await?;
    let consumer: consumer::PullConsumer = stream
        .get_or_create_consumer(
            &args.durable,
            consumer::pull::Config {
                durable_name: Some(args.durable.clone()),
                filter_subject: format!("dhcp.{}.lease.{}", args.site, args.event),
                // Acknowledged one by one: an event not acknowledged (this program
                // stopped first) comes again.
                ack_policy: consumer::AckPolicy::Explicit,
                ..Default::default()
            },
        )
        .await?;
    let mut seen = 0u64;
    loop {
        // Asks for no more than it will print: an event handed out and never
        // acknowledged would come back only after the consumer's ack wait.
        let want = args.count.map_or(256, |c| c.saturating_sub(seen).min(256));
        if want == 0 {
            break;
        }
        let mut batch = consumer
            .batch()
            .max_messages(want as usize)
            .expires(Duration::from_secs(30))
            .messages()
            .await?;
        while let Some(message) = batch.next().await {
            let message = message?;
            let event: serde_json::Value = serde_json::from_slice(&message.payload)?;
            let field = |k: &str| event[k].as_str().unwrap_or("-").to_string();
            println!(
                "{} {} {} {} until {} ({})",
                field("event"),
                field("address"),
                field("hardware-address"),
                field("host-name"),
                event["ends"],
                field("id"),
            );
            message.ack().await?;
            seen += 1;
        }
    }
    Ok(())
}

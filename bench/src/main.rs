//! `swarm-bench`: load scenarios that measure Swarm as its users meet it, from a client process
//! of its own, against the `swarm` binary's roles started as separate processes.

mod held_load;
mod stack;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// Measures Swarm under load.
#[derive(Debug, Parser)]
#[command(name = "swarm-bench", version)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Holds many open task event streams and waiting claims, then measures task creation
    /// and the tasks service's memory.
    HeldLoad(HeldLoadArgs),
}

#[derive(Debug, clap::Args)]
struct HeldLoadArgs {
    /// The `swarm` binary whose roles are started.
    #[arg(long, default_value = "target/release/swarm")]
    swarm: PathBuf,
    /// The database every role uses.
    #[arg(long)]
    database_url: String,
    /// Task event streams held open.
    #[arg(long, default_value_t = 2000)]
    streams: usize,
    /// Claims held waiting, one per agent.
    #[arg(long, default_value_t = 1000)]
    claims: usize,
    /// Seconds tasks are created while the streams and claims are held.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Tasks created per second, on a schedule.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.scenario {
        Scenario::HeldLoad(args) => {
            held_load::run(held_load::Options {
                swarm: args.swarm,
                database_url: args.database_url,
                streams: args.streams,
                claims: args.claims,
                duration: Duration::from_secs(args.seconds),
                rate: args.rate,
            })
            .await
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("swarm-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

//! segnode command line. `segment` runs a pipeline on a series folder; `phantom` (hidden) writes test
//! phantoms for benchmarks and peers.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "segnode",
    version,
    about = "DICOM node: receives CT series, segments them, sends DICOM SEG back"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Segment a series folder and write a DICOM SEG; prints one JSON line.
    Segment(segnode::segment::cli::SegmentArgs),
    /// Write a synthetic chest CT series with ground truth.
    #[command(hide = true)]
    Phantom(segnode::phantom::cli::PhantomArgs),
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SEGNODE_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Segment(a) => segnode::segment::cli::run(a),
        Command::Phantom(a) => segnode::phantom::cli::run(a),
    };
    match result {
        Ok(v) => println!("{v}"),
        Err(e) => {
            println!(
                "{}",
                serde_json::json!({ "status": "error", "error": format!("{e:#}") })
            );
            eprintln!("segnode: {e:#}");
            std::process::exit(1);
        }
    }
}

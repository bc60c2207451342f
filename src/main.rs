//! The `segnode` binary: command-line parsing, logging set-up, and dispatch to the library. Errors from
//! the library are typed; here, at the edge, they become `anyhow` messages and an exit status.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

use segnode::config::Settings;
use segnode::store::index::Index;

#[derive(Parser)]
#[command(
    name = "segnode",
    version,
    about = "DICOM node: receive CT/CBCT series, segment, send DICOM SEG back"
)]
struct Cli {
    /// Configuration file (default: config/segnode.toml when present, else built-in defaults).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node: DICOM listener, store, index, series completion.
    Serve,
    /// Inspect the series in the index.
    #[command(subcommand)]
    Series(SeriesCommand),
    /// Segment a series folder and write a DICOM SEG; prints one JSON line.
    Segment(segnode::segment::cli::SegmentArgs),
    /// Write a synthetic series with ground truth (tests, benchmarks).
    #[command(hide = true)]
    Phantom(segnode::phantom::cli::PhantomArgs),
}

#[derive(Subcommand)]
enum SeriesCommand {
    /// List every series (newest first).
    List(ListArgs),
    /// Show one series and its history.
    Show {
        /// Series Instance UID.
        uid: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct ListArgs {
    /// One JSON document (an array of series) instead of a table.
    #[arg(long)]
    json: bool,
}

fn init_logging(settings: &Settings) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if settings.log.format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Offline commands print one JSON line, also on failure, so scripts can parse every outcome.
fn offline(result: anyhow::Result<serde_json::Value>) -> anyhow::Result<()> {
    match result {
        Ok(v) => {
            println!("{v}");
            Ok(())
        }
        Err(e) => {
            println!("{}", serde_json::json!({ "status": "error", "error": format!("{e:#}") }));
            Err(e)
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Segment(_) | Command::Phantom(_) = &cli.command {
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("SEGNODE_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .with_writer(std::io::stderr)
            .init();
    }
    match &cli.command {
        Command::Segment(a) => return offline(segnode::segment::cli::run(a)),
        Command::Phantom(a) => return offline(segnode::phantom::cli::run(a)),
        _ => {}
    }
    let settings = Settings::load(cli.config.as_deref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match cli.command {
        Command::Serve => {
            init_logging(&settings);
            runtime.block_on(segnode::node::serve(settings))?;
        }
        Command::Series(cmd) => runtime.block_on(series_command(settings, cmd))?,
        Command::Segment(_) | Command::Phantom(_) => {}
    }
    Ok(())
}

fn fmt_ms(ms: Option<i64>) -> String {
    match ms {
        None => "-".into(),
        Some(ms) => {
            let secs = ms / 1000;
            let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
            let days = secs / 86_400;
            // civil date from days since epoch (proleptic Gregorian)
            let z = days + 719_468;
            let era = z.div_euclid(146_097);
            let doe = z - era * 146_097;
            let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
            let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
            let mp = (5 * doy + 2) / 153;
            let d = doy - (153 * mp + 2) / 5 + 1;
            let mo = if mp < 10 { mp + 3 } else { mp - 9 };
            let y = yoe + era * 400 + if mo <= 2 { 1 } else { 0 };
            format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
        }
    }
}

async fn series_command(settings: Settings, cmd: SeriesCommand) -> anyhow::Result<()> {
    let index = Index::open(&settings.database.url)
        .await
        .with_context(|| format!("opening the index {}", settings.database.url))?;
    match cmd {
        SeriesCommand::List(args) => {
            let rows = index.list_series().await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!(
                    "{:<64}  {:<4} {:>6}  {:<9} {:>3}  {:<20}  {:<20}  REASON",
                    "SERIES UID", "MOD", "INST", "STATE", "REV", "FIRST RECEIVED", "COMPLETED"
                );
                for r in rows {
                    println!(
                        "{:<64}  {:<4} {:>6}  {:<9} {:>3}  {:<20}  {:<20}  {}",
                        r.series_uid,
                        r.modality.as_deref().unwrap_or("-"),
                        r.instance_count,
                        r.state,
                        r.revision,
                        fmt_ms(Some(r.first_received_ms)),
                        fmt_ms(r.completed_ms),
                        r.completion_reason.as_deref().unwrap_or("")
                    );
                }
            }
        }
        SeriesCommand::Show { uid, json } => {
            let series = index
                .list_series()
                .await?
                .into_iter()
                .find(|s| s.series_uid == uid);
            let Some(series) = series else {
                anyhow::bail!("no series {uid} in the index");
            };
            let events = index.series_events(&uid).await?;
            if json {
                let instances = index.series_instances(&uid).await?;
                println!(
                    "{}",
                    serde_json::json!({ "series": series, "history": events, "instances": instances })
                );
            } else {
                println!("series {} (study {})", series.series_uid, series.study_uid);
                println!(
                    "  {} instances, state {} (revision {}), modality {}",
                    series.instance_count,
                    series.state,
                    series.revision,
                    series.modality.as_deref().unwrap_or("-")
                );
                for e in events {
                    println!(
                        "  {}  rev {}  {:<9} {}",
                        fmt_ms(Some(e.at_ms)),
                        e.revision,
                        e.event,
                        e.detail.unwrap_or_default()
                    );
                }
            }
        }
    }
    index.close().await;
    Ok(())
}
